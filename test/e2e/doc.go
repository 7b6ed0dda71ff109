// Package e2e holds end-to-end tests that run flowplace's real datapath on the
// real kernel across network-namespace "clusters" with injected WAN RTT.
package e2e
