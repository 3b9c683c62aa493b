package ubustest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// StockEnv names the environment variable that points interoperability tests at a stock
// ubusd: an install prefix holding sbin/ubusd, bin/ubus and lib/, built by hand from
// openwrt/libubox and openwrt/ubus (nothing in this repository builds or ships them).
const StockEnv = "AFCONN_STOCK_UBUS"

// Stock is a stock ubusd on a socket, and the stock ubus CLI that talks to it.
type Stock struct {
	Prefix string
	Socket string
	t      testing.TB
	ubusd  *exec.Cmd
}

// StartStock starts the stock ubusd of $AFCONN_STOCK_UBUS on sock and stops it when the test
// ends. Without the variable the test is skipped: the stock tools are not part of the suite.
func StartStock(t testing.TB, sock string) *Stock {
	t.Helper()
	prefix := os.Getenv(StockEnv)
	if prefix == "" {
		t.Skip(StockEnv + " not set: no stock ubusd to test against")
	}
	s := &Stock{Prefix: prefix, Socket: sock, t: t}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

func (s *Stock) env() []string {
	return append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(s.Prefix, "lib"))
}

// Start starts ubusd (again).
func (s *Stock) Start() {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(s.Prefix, "sbin/ubusd"), "-s", s.Socket)
	cmd.Env = s.env()
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start stock ubusd: %v", err)
	}
	s.ubusd = cmd
}

// Kill kills ubusd and waits for it to exit, as a crash would end it.
func (s *Stock) Kill() {
	if s.ubusd != nil {
		s.ubusd.Process.Kill()
		s.ubusd.Wait()
		s.ubusd = nil
	}
}

// Command is the stock ubus CLI on the socket with args, not started.
func (s *Stock) Command(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.Prefix, "bin/ubus"), append([]string{"-s", s.Socket}, args...)...)
	cmd.Env = s.env()
	return cmd
}

// Run runs the stock ubus CLI with args and returns what it printed, failing the test if it
// fails.
func (s *Stock) Run(args ...string) string {
	s.t.Helper()
	out, err := s.Command(args...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("ubus %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
