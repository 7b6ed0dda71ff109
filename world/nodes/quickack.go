package nodes

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// quickACKPlugin is a chained CNI plugin, run after the bridge plugin, that
// puts "quickack 1" on the pod's routes when the world's WAN does (see
// wan.Config.QuickACK): without it a pod's kernel RTT samples of
// request/response traffic include the peer's delayed-ACK timer. It is this
// executable, linked into the node's CNI directory under this name.
const quickACKPlugin = "flowplace-quickack"

func init() {
	if filepath.Base(os.Args[0]) == quickACKPlugin {
		os.Exit(quickACKMain(os.Stdin, os.Stdout))
	}
}

// quickACKMain implements the CNI protocol's ADD, DEL, CHECK and VERSION.
func quickACKMain(stdin io.Reader, stdout io.Writer) int {
	fail := func(err error) int {
		json.NewEncoder(stdout).Encode(map[string]any{"cniVersion": "0.4.0", "code": 999, "msg": err.Error()})
		return 1
	}
	switch os.Getenv("CNI_COMMAND") {
	case "VERSION":
		json.NewEncoder(stdout).Encode(map[string]any{"cniVersion": "0.4.0", "supportedVersions": []string{"0.3.0", "0.3.1", "0.4.0"}})
		return 0
	case "DEL", "CHECK":
		return 0
	case "ADD":
	default:
		return fail(fmt.Errorf("%s: unknown CNI_COMMAND %q", quickACKPlugin, os.Getenv("CNI_COMMAND")))
	}
	var conf struct {
		CNIVersion string          `json:"cniVersion"`
		PrevResult json.RawMessage `json:"prevResult"`
	}
	if err := json.NewDecoder(stdin).Decode(&conf); err != nil {
		return fail(fmt.Errorf("%s: reading the network configuration: %w", quickACKPlugin, err))
	}
	if len(conf.PrevResult) == 0 {
		return fail(fmt.Errorf("%s: must be chained after a plugin that returns a result", quickACKPlugin))
	}
	if err := setQuickACK(os.Getenv("CNI_NETNS")); err != nil {
		return fail(fmt.Errorf("%s: %w", quickACKPlugin, err))
	}
	// A chained plugin passes the previous result on, with the version
	// the runtime asked for.
	var res map[string]any
	if err := json.Unmarshal(conf.PrevResult, &res); err != nil {
		return fail(fmt.Errorf("%s: prevResult: %w", quickACKPlugin, err))
	}
	res["cniVersion"] = conf.CNIVersion
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

// setQuickACK replaces every IPv4 route of the main table in the pod's
// namespace by the same route with quickack set.
func setQuickACK(nsPath string) error {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	runtime.LockOSThread() // the process exits right after: never unlocked
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("enter netns %s: %w", nsPath, err)
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		r.QuickACK = 1
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("set quickack on route %s: %w", r, err)
		}
	}
	return nil
}
