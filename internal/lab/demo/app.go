// Package demo is the lab's demo application: services with a known call
// graph that really talk HTTP over TCP, so the probes see real connections.
package demo

import (
	"fmt"
	"slices"
)

// Call is one edge of the call graph: per request it serves, a service
// makes Count calls of ReqBytes to To, each answered with To's RespBytes.
type Call struct {
	To       string
	Count    int
	ReqBytes int
}

// Service is one workload of the demo application.
type Service struct {
	Name      string
	RespBytes int // what it answers its callers with
	Calls     []Call
}

// App is a call graph with an entry service that clients call.
type App struct {
	Namespace string
	Entry     string
	Services  []Service
}

// Shop is the default demo: an online shop of seven services, the shape of
// a typical storefront (entry, catalog reads, a cart that prices and checks
// stock, recommendations over the catalog, a checkout that re-prices the
// cart). Per-edge byte counts make some pairs much chattier than others, so
// where each service runs matters.
func Shop() *App {
	return &App{
		Namespace: "shop",
		Entry:     "frontend",
		Services: []Service{
			{Name: "frontend", RespBytes: 16 << 10, Calls: []Call{
				{To: "catalog", Count: 2, ReqBytes: 200},
				{To: "cart", Count: 1, ReqBytes: 300},
				{To: "recommend", Count: 1, ReqBytes: 200},
				{To: "checkout", Count: 1, ReqBytes: 500},
			}},
			{Name: "catalog", RespBytes: 24 << 10},
			{Name: "cart", RespBytes: 4 << 10, Calls: []Call{
				{To: "pricing", Count: 2, ReqBytes: 200},
				{To: "inventory", Count: 1, ReqBytes: 200},
			}},
			{Name: "recommend", RespBytes: 8 << 10, Calls: []Call{
				{To: "catalog", Count: 3, ReqBytes: 200},
			}},
			{Name: "checkout", RespBytes: 1 << 10, Calls: []Call{
				{To: "cart", Count: 1, ReqBytes: 300},
				{To: "pricing", Count: 1, ReqBytes: 200},
			}},
			{Name: "pricing", RespBytes: 2 << 10},
			{Name: "inventory", RespBytes: 1 << 10},
		},
	}
}

// Service returns the named service.
func (a *App) Service(name string) (*Service, bool) {
	i := slices.IndexFunc(a.Services, func(s Service) bool { return s.Name == name })
	if i < 0 {
		return nil, false
	}
	return &a.Services[i], true
}

// Validate checks that every call goes to a known service, the graph has no
// cycle (a request must finish) and the entry exists.
func (a *App) Validate() error {
	if _, ok := a.Service(a.Entry); !ok {
		return fmt.Errorf("entry %q is not a service", a.Entry)
	}
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(string) error
	visit = func(name string) error {
		s, ok := a.Service(name)
		if !ok {
			return fmt.Errorf("call to unknown service %q", name)
		}
		switch state[name] {
		case 1:
			return fmt.Errorf("call graph has a cycle through %q", name)
		case 2:
			return nil
		}
		state[name] = 1
		for _, c := range s.Calls {
			if c.Count < 1 || c.ReqBytes < 0 {
				return fmt.Errorf("%s -> %s: counts and sizes must be positive", name, c.To)
			}
			if err := visit(c.To); err != nil {
				return err
			}
		}
		state[name] = 2
		return nil
	}
	for _, s := range a.Services {
		if err := visit(s.Name); err != nil {
			return err
		}
	}
	return nil
}

// BytesPerEntryRequest returns, for one request to the entry service, the
// bytes exchanged on each caller->callee edge (request + response), the
// ground truth the lab's measurements are checked against.
func (a *App) BytesPerEntryRequest() map[[2]string]int {
	out := map[[2]string]int{}
	var walk func(name string, mult int)
	walk = func(name string, mult int) {
		s, _ := a.Service(name)
		for _, c := range s.Calls {
			callee, _ := a.Service(c.To)
			out[[2]string{name, c.To}] += mult * c.Count * (c.ReqBytes + callee.RespBytes)
			walk(c.To, mult*c.Count)
		}
	}
	walk(a.Entry, 1)
	return out
}
