package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The seed's firewall scripts are thin wrappers: each command line becomes exactly one
// `connmgr fw ...` call. A stand-in connmgr on PATH writes down what it was called with.
func TestFirewallScripts(t *testing.T) {
	scripts, err := filepath.Abs("../../../files/usr/lib/af-conn")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	record := filepath.Join(bin, "calls")
	stub := "#!/bin/sh\necho \"$*\" >> " + record + "\n"
	if err := os.WriteFile(filepath.Join(bin, "connmgr"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	shells := []string{"sh"}
	if _, err := exec.LookPath("busybox"); err == nil {
		shells = append(shells, "busybox ash")
	}
	for _, shell := range shells {
		os.Remove(record)
		run := func(args ...string) {
			t.Helper()
			argv := append(strings.Fields(shell), args...)
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s %q: %v: %s", shell, args, err, out)
			}
		}
		run(filepath.Join(scripts, "fwcfg.sh"), "add", "198.18.0.5", "cloud.afero.io", "check_fw")
		run(filepath.Join(scripts, "fwcfg.sh"), "del_forwarding", "198.18.0.6", "a comment with spaces")
		run(filepath.Join(scripts, "fwcfg.sh"), "restart")
		run(filepath.Join(scripts, "init_firewall.sh"))
		// fw3 and fw4 source script includes (fw4: sh -c "exec 1000>&-; config() {...}; . PATH";
		// dash knows no descriptors above 9, OpenWrt's ash does).
		closeLock := ""
		if shell != "sh" {
			closeLock = "exec 1000>&-; "
		}
		run("-c", closeLock+"config() { echo 'You cannot use UCI in firewall includes!' >&2; exit 1; }; . '"+filepath.Join(scripts, "firewall.include")+"'")
		got, err := os.ReadFile(record)
		if err != nil {
			t.Fatal(err)
		}
		want := "fw add 198.18.0.5 cloud.afero.io check_fw\nfw del_forwarding 198.18.0.6 a comment with spaces\nfw restart\nfw init\nfw restore\n"
		if string(got) != want {
			t.Errorf("%s: calls:\n%s\nwant:\n%s", shell, got, want)
		}
	}
	if _, err := exec.LookPath("shellcheck"); err == nil {
		for _, f := range []string{"fwcfg.sh", "init_firewall.sh", "firewall.include"} {
			if out, err := exec.Command("shellcheck", "-s", "sh", filepath.Join(scripts, f)).CombinedOutput(); err != nil {
				t.Errorf("shellcheck %s: %v\n%s", f, err, out)
			}
		}
	}
}
