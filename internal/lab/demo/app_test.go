package demo

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestShopIsValid(t *testing.T) {
	app := Shop()
	if err := app.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(app.Services) < 6 {
		t.Errorf("%d services; the lab needs at least 6", len(app.Services))
	}
	b := app.BytesPerEntryRequest()
	// recommend reads the catalog three times per call: the chattiest edge.
	if got, want := b[[2]string{"recommend", "catalog"}], 3*(200+24<<10); got != want {
		t.Errorf("recommend->catalog %d bytes, want %d", got, want)
	}
	// cart is called by frontend and by checkout: pricing sees both.
	if got, want := b[[2]string{"cart", "pricing"}], 2*2*(200+2<<10); got != want {
		t.Errorf("cart->pricing %d bytes, want %d", got, want)
	}
}

func TestValidateRejectsBadGraphs(t *testing.T) {
	for _, tc := range []struct {
		app  App
		want string
	}{
		{App{Entry: "x"}, `entry "x"`},
		{App{Entry: "a", Services: []Service{{Name: "a", Calls: []Call{{To: "b", Count: 1}}}}}, `unknown service "b"`},
		{App{Entry: "a", Services: []Service{{Name: "a", Calls: []Call{{To: "b", Count: 1}}}, {Name: "b", Calls: []Call{{To: "a", Count: 1}}}}}, "cycle"},
		{App{Entry: "a", Services: []Service{{Name: "a", Calls: []Call{{To: "b", Count: 0}}}, {Name: "b"}}}, "positive"},
	} {
		if err := tc.app.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

// The whole shop, served on loopback, answers an entry request with the
// entry's response after every downstream call succeeded.
func TestShopServesRequests(t *testing.T) {
	app := Shop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lns := map[string]net.Listener{}
	addrs := map[string]string{}
	for _, s := range app.Services {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[s.Name], addrs[s.Name] = ln, ln.Addr().String()
	}
	for _, s := range app.Services {
		svc, _ := app.Service(s.Name)
		srv, err := NewServer(svc, addrs, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ctx, lns[s.Name])
	}
	entry, _ := app.Service(app.Entry)
	for range 5 {
		if err := Request(ctx, http.DefaultClient, addrs[app.Entry], 100, entry.RespBytes); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewServer(entry, map[string]string{}, netip.Addr{}); err == nil {
		t.Error("a server without its peers' addresses was accepted")
	}
}
