package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Server runs one service: it answers each request after making its
// downstream calls, one after another, like a synchronous handler does.
type Server struct {
	svc    *Service
	peers  map[string]string // service -> host:port
	client *http.Client
	body   []byte
}

// NewServer returns the server of svc, calling its peers at the given
// addresses (service name -> host:port). Outgoing connections leave from
// local, if valid, as a pod's leave from the pod's own address.
func NewServer(svc *Service, peers map[string]string, local netip.Addr) (*Server, error) {
	for _, c := range svc.Calls {
		if _, ok := peers[c.To]; !ok {
			return nil, fmt.Errorf("service %s calls %s, whose address is not given", svc.Name, c.To)
		}
	}
	return &Server{
		svc:   svc,
		peers: peers,
		// Keep-alive connections, as real service clients use: each
		// caller->callee pair is a few long-lived TCP connections.
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 8, IdleConnTimeout: time.Minute, DisableCompression: true,
			DialContext: dialer(local).DialContext,
		}},
		body: []byte(strings.Repeat("x", svc.RespBytes)),
	}, nil
}

// ServeHTTP makes the downstream calls, then answers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	for _, c := range s.svc.Calls {
		for range c.Count {
			if err := Request(r.Context(), s.client, s.peers[c.To], c.ReqBytes, 0); err != nil {
				http.Error(w, fmt.Sprintf("%s -> %s: %v", s.svc.Name, c.To, err), http.StatusBadGateway)
				return
			}
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(s.body)))
	w.Write(s.body)
}

// Request sends one request of reqBytes to addr and reads a response, which must
// be respBytes long (0: any length).
func Request(ctx context.Context, c *http.Client, addr string, reqBytes, respBytes int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/", strings.NewReader(strings.Repeat("q", reqBytes)))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if respBytes > 0 && n != int64(respBytes) {
		return fmt.Errorf("response of %d bytes, want %d", n, respBytes)
	}
	return nil
}

// Serve runs the server on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", s.svc.Name, err)
	}
	return nil
}

func dialer(local netip.Addr) *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	return d
}
