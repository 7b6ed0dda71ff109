// Command pause is the sandbox process of the lab's pods, in the image
// flowplace.local/pause (built by internal/images, never pulled). Like
// Kubernetes' pause it only holds the pod's namespaces open: it blocks until
// SIGINT or SIGTERM and exits 0. It does not reap zombies (pods here do not
// share a PID namespace).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// As PID 1 of a container, a signal without a handler is ignored by the
	// kernel, so the handler is what makes SIGTERM stop the sandbox.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
