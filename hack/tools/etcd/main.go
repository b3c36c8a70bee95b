// Command etcd is upstream etcd: the root module go.etcd.io/etcd/v3 cannot be
// `go install`ed (it has local replace directives), so this module depends on
// go.etcd.io/etcd/server/v3 and calls the same entry point etcd's main.go does.
// It lives in its own module because etcd's dependency versions (grpc, otel)
// differ from the ones k8s.io/kubernetes pins.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
