package testbed

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
)

// echoServer is the cloud's Afero echo service: every byte it receives goes back.
type echoServer struct {
	l     net.Listener
	conns atomic.Int64
	wg    sync.WaitGroup
}

func (w *World) startEcho() error {
	l, err := w.Cloud.Listen("tcp4", netip.AddrPortFrom(EchoAddr, EchoPort).String())
	if err != nil {
		return fmt.Errorf("testbed: echo listen: %w", err)
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
