"""The node agent (`wattcap agent`): applies the operator's per-GPU power limits on its node.

One process per GPU node (the chart's DaemonSet, agent.enabled). It learns which pod holds
which GPU from the kubelet's pod-resources API (podresources.py), the limit each pod should
run at from the pod annotation wattcap.io/gpu-power-limit-watts (pods.py), applies it
through NVML (gpus.py) and reports the limit in force as DCGM_FI_DEV_ENFORCED_POWER_LIMIT
(metrics.py); run.py ties them together. See docs/node-agent.md.
"""
