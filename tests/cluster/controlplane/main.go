// Command kcp runs one component of the project's test control plane per process:
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler, each from its own
// upstream package at the release pinned in go.mod, and a `pki` command that writes
// the certificates and keys they need. One binary links the shared Kubernetes packages
// once, which builds faster than three binaries (as hyperkube did). See
// docs/cluster.md; tests/cluster/cluster.py starts and stops it.
package main

import (
	"fmt"
	"os"
	_ "time/tzdata" // CronJob time zones, as upstream's main packages do

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = `usage: kcp COMPONENT [FLAGS...]

components:
  etcd                     an etcd member (go.etcd.io/etcd/server/v3/embed)
  kube-apiserver           the API server (k8s.io/kubernetes/cmd/kube-apiserver/app)
  kube-controller-manager  the controller manager
  kube-scheduler           the scheduler
  pki -dir DIR [-node NAME]...
                           a CA, serving and client certificates, service-account keys
  version                  the Kubernetes and etcd versions this binary was built from
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	component, args := os.Args[1], os.Args[2:]
	// Each upstream command parses os.Args[1:] itself: drop the component name.
	os.Args = append([]string{component}, args...)
	switch component {
	case "etcd":
		os.Exit(runEtcd(args))
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "kube-scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "pki":
		os.Exit(runPKI(args))
	case "version":
		fmt.Println(versions())
	default:
		fmt.Fprintf(os.Stderr, "kcp: unknown component %q\n%s", component, usage)
		os.Exit(2)
	}
}
