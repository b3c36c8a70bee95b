"""wattcap: keep a GPU site under its utility power cap."""

__version__ = "0.1.0"
