package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoIPTablesBuild checks the build for fw4 images (tag noiptables, what FIREWALL=fw4
// and the feed Makefile's GO_PKG_TAGS choose): go-iptables, regexp and the ip set code are
// not linked in, while a build without tags keeps both backends; and that build, asked for
// the iptables backend, says why it cannot rather than failing somewhere inside.
func TestNoIPTablesBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds connmgr")
	}
	cut := []string{"github.com/coreos/go-iptables/iptables", "regexp", "github.com/afero/af-conn/internal/firewall/ipset"}
	deps := func(tags string) string {
		out, err := exec.Command("go", "list", "-deps", "-tags", tags, ".").CombinedOutput()
		if err != nil {
			t.Fatalf("go list -tags %q: %v\n%s", tags, err, out)
		}
		return "\n" + string(out)
	}
	plain, tagged := deps(""), deps("noiptables")
	for _, p := range cut {
		if !strings.Contains(plain, "\n"+p+"\n") {
			t.Errorf("the build without tags lacks %s: both backends belong in it", p)
		}
		if strings.Contains(tagged, "\n"+p+"\n") {
			t.Errorf("the noiptables build still imports %s", p)
		}
	}

	if os.Geteuid() != 0 {
		t.Skip("running the binary in its own network namespace needs root")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "connmgr")
	build := exec.Command("go", "build", "-tags", "noiptables", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags noiptables: %v\n%s", err, out)
	}
	uci := filepath.Join(dir, "config")
	if err := os.MkdirAll(uci, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := "config connmgr 'main'\n\toption firewall '1'\n\toption firewall_backend 'iptables'\n\n" +
		"config uplink 'ethnet'\n\toption type 'ethernet'\n\toption priority '1'\n"
	if err := os.WriteFile(filepath.Join(uci, "connmgr"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// No daemon on the socket: fw init sets the lock-down up itself, in a fresh namespace.
	cmd := exec.Command("unshare", "--net", bin, "fw", "-s", filepath.Join(dir, "none.sock"), "-c", uci,
		"-w", filepath.Join(dir, "whitelist"), "init")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFailure {
		t.Fatalf("connmgr fw init with firewall_backend iptables: %v, stderr %q; want exit %d", err, stderr.String(), exitFailure)
	}
	if want := "firewall_backend iptables: this connmgr is built without the iptables backend"; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q; want it to say %q", stderr.String(), want)
	}
}
