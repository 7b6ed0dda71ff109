package main

import (
	"bytes"
	"strings"
	"testing"
)

// karmadactl addons' flag names, plus helm's -f and --set.
func TestAddonsFlags(t *testing.T) {
	root := newRootCommand()
	enable, _, err := root.Find([]string{"addons", "enable"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ name, short string }{
		{"namespace", "n"}, {"kubeconfig", ""}, {"context", ""}, {"karmada-kubeconfig", ""}, {"karmada-context", ""},
		{"cluster", "C"}, {"member-kubeconfig", ""}, {"member-context", ""}, {"private-image-registry", ""},
		{"pod-timeout", ""}, {"values", "f"}, {"set", ""},
	} {
		fl := enable.Flags().Lookup(f.name)
		if fl == nil || fl.Shorthand != f.short {
			t.Errorf("enable --%s (-%s): %+v", f.name, f.short, fl)
		}
	}
	if err := enable.Flags().Set("pod-timeout", "120"); err != nil || enable.Flags().Lookup("pod-timeout").Value.String() != "2m0s" {
		t.Errorf("--pod-timeout 120 (karmadactl's seconds): %v %s", err, enable.Flags().Lookup("pod-timeout").Value)
	}
	if err := enable.Flags().Set("pod-timeout", "-3"); err == nil {
		t.Error("--pod-timeout -3 accepted")
	}
	disable, _, _ := root.Find([]string{"addons", "disable"})
	if disable.Flags().Lookup("purge") == nil {
		t.Error("disable has no --purge")
	}
}

func TestAddonsBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"addons", "enable", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"addons", "enable", "karmada-search"}, `unknown addon "karmada-search"`},
		{[]string{"addons", "enable", "--kubeconfig", "/nonexistent/host.config"}, "/nonexistent/host.config"},
		{[]string{"addons", "status", "--kubeconfig", "/nonexistent/host.config"}, "/nonexistent/host.config"},
		{[]string{"addons", "enable", "--set", "a.b=c", "-f", "/nonexistent/values.yaml"}, "values file"},
	} {
		root := newRootCommand()
		root.SetArgs(c.args)
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error containing %q", c.args, err, c.want)
		}
	}
}
