// Command karmada-scheduler is Karmada's scheduler with flowplace's
// LatencyBudget filter and TrafficLocality score registered. Run it beside
// the default scheduler with its own --scheduler-name and
// --leader-elect-resource-name; see scheduler-plugin/README.md.
package main

import (
	"os"

	"github.com/karmada-io/karmada/cmd/scheduler/app"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json, as upstream
	controllerruntime "sigs.k8s.io/controller-runtime"

	"github.com/flowplace/flowplace/scheduler-plugin/karmada"
	"github.com/flowplace/flowplace/scheduler-plugin/latencybudget"
	"github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
)

func main() {
	ctx := controllerruntime.SetupSignalHandler()
	cmd := app.NewSchedulerCommand(ctx,
		app.WithPlugin(latencybudget.Name, karmada.NewLatencyBudget),
		app.WithPlugin(trafficlocality.Name, karmada.NewTrafficLocality),
	)
	code := cli.Run(cmd)
	logs.FlushLogs()
	os.Exit(code)
}
