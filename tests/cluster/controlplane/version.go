package main

import (
	"fmt"
	"runtime/debug"
)

// versions reports the module versions this binary was built from.
func versions() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var kube, etcd string
	for _, dep := range info.Deps {
		switch dep.Path {
		case "k8s.io/kubernetes":
			kube = dep.Version
		case "go.etcd.io/etcd/server/v3":
			etcd = dep.Version
		}
	}
	return fmt.Sprintf("kubernetes %s etcd %s %s", kube, etcd, info.GoVersion)
}
