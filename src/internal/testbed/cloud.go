package testbed

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// echoServer is the cloud's Afero echo service: every byte it receives goes back.
type echoServer struct {
	l     net.Listener
	conns atomic.Int64
	wg    sync.WaitGroup
}

func (w *World) startEcho() error {
	if err := w.serveEcho("tcp4", netip.AddrPortFrom(EchoAddr, EchoPort).String()); err != nil {
		return err
	}
	if !w.dualStack() {
		// IPv4-only worlds stay as they were before IPv6: tests of their own serve other
		// ports of the cloud (8204 among them).
		return nil
	}
	if err := w.startHTTP("tcp4", netip.AddrPortFrom(EchoAddr, HTTPPort).String()); err != nil {
		return err
	}
	// Every IPv6 address of the cloud: Echo6Addr, and with DNS64 the synthesized ones.
	if err := w.serveEcho("tcp6", fmt.Sprintf("[::]:%d", EchoPort)); err != nil {
		return err
	}
	return w.startHTTP("tcp6", fmt.Sprintf("[::]:%d", HTTPPort))
}

// serveEcho runs an echo service on addr in the cloud until the world closes.
func (w *World) serveEcho(network, addr string) error {
	l, err := w.Cloud.Listen(network, addr)
	if err != nil {
		return fmt.Errorf("testbed: echo listen %s: %w", addr, err)
	}
	s := &echoServer{l: l}
	s.wg.Add(1)
	go s.serve()
	w.OnClose(func() error {
		l.Close()
		s.wg.Wait()
		return nil
	})
	return nil
}

func (s *echoServer) serve() {
	defer s.wg.Done()
	var open sync.Map
	defer func() {
		open.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
	}()
	for {
		c, err := s.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.conns.Add(1)
		open.Store(c, true)
		go func() {
			defer open.Delete(c)
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// EchoURL is the echo service as host:port, for configs and probes.
func EchoURL() string { return net.JoinHostPort(EchoAddr.String(), strconv.Itoa(EchoPort)) }

// Echo6URL is the echo service's IPv6 address as [host]:port (dual-stack worlds).
func Echo6URL() string { return net.JoinHostPort(Echo6Addr.String(), strconv.Itoa(EchoPort)) }

// startHTTP runs the cloud's HTTP service on addr: GET /generate_204 answers 204 No Content
// (what connmgr's http probe expects), anything else 404.
func (w *World) startHTTP(network, addr string) error {
	l, err := w.Cloud.Listen(network, addr)
	if err != nil {
		return fmt.Errorf("testbed: http listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/generate_204" {
				rw.WriteHeader(http.StatusNoContent)
				return
			}
			http.NotFound(rw, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(l)
	w.OnClose(func() error { srv.Close(); return nil })
	return nil
}
