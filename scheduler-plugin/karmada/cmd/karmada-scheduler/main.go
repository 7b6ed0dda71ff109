// Command karmada-scheduler is Karmada's scheduler with flowplace's
// LatencyBudget filter and TrafficLocality score registered. Run it beside
// the default scheduler with its own --scheduler-name and
// --leader-elect-resource-name; see scheduler-plugin/README.md.
package main

import (
	"fmt"
	"os"

	"github.com/karmada-io/karmada/cmd/scheduler/app"
	"go.opentelemetry.io/otel"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json, as upstream
	controllerruntime "sigs.k8s.io/controller-runtime"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/flowplace/flowplace/scheduler-plugin/karmada"
	"github.com/flowplace/flowplace/scheduler-plugin/latencybudget"
	"github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
	"github.com/flowplace/flowplace/telemetry"
)

func main() {
	// The plugins' decision metrics, on the scheduler's own /metrics
	// (it serves controller-runtime's registry).
	mp, err := telemetry.NewPrometheusMeterProvider(ctrlmetrics.Registry)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	otel.SetMeterProvider(mp)
	ctx := controllerruntime.SetupSignalHandler()
	cmd := app.NewSchedulerCommand(ctx,
		app.WithPlugin(latencybudget.Name, karmada.NewLatencyBudget),
		app.WithPlugin(trafficlocality.Name, karmada.NewTrafficLocality),
	)
	code := cli.Run(cmd)
	logs.FlushLogs()
	os.Exit(code)
}
