package addon

import (
	"bytes"
	"testing"
	"time"
)

// keepOrIssue keeps a certificate only while it still fits: a second enable
// must change nothing, and a changed name, CA or expiry must re-issue.
func TestKeepOrIssue(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ca, err := newAuthority("test-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := newAuthority("other-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	req := leafRequest{CommonName: "flowplace-agent.member1", URIs: []string{clusterIdentityURI("uid-1")}}
	crt, key, err := ca.issue(req, now)
	if err != nil {
		t.Fatal(err)
	}
	otherCrt, otherKey, err := other.issue(req, now)
	if err != nil {
		t.Fatal(err)
	}
	moved := req
	moved.URIs = []string{clusterIdentityURI("uid-2")}
	server := req
	server.Server = true
	cases := []struct {
		name     string
		req      leafRequest
		crt, key []byte
		at       time.Time
		keep     bool
	}{
		{"same request", req, crt, key, now, true},
		{"another cluster UID", moved, crt, key, now, false},
		{"server instead of client usage", server, crt, key, now, false},
		{"signed by another CA", req, otherCrt, otherKey, now, false},
		{"key of another certificate", req, crt, otherKey, now, false},
		{"within renewBefore of expiry", req, crt, key, now.Add(leafValidity - renewBefore + time.Hour), false},
		{"nothing installed", req, nil, nil, now, false},
	}
	for _, c := range cases {
		gotCrt, gotKey, err := ca.keepOrIssue(c.req, c.crt, c.key, c.at)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		kept := bytes.Equal(gotCrt, c.crt) && bytes.Equal(gotKey, c.key)
		if kept != c.keep {
			t.Errorf("%s: kept %v, want %v", c.name, kept, c.keep)
		}
		if !ca.fits(c.req, gotCrt, gotKey, c.at) {
			t.Errorf("%s: the returned certificate does not fit the request", c.name)
		}
	}
}
