package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/usage"
)

// The usage ledger is written by root in /var/run/connmgr. Whoever can put a
// symbolic link where connmgr writes (the ledger's temporary file, or the ledger)
// must not make connmgr overwrite or read the file it points to, and a ledger
// directory that others may write to is not used at all.
func TestUsageLedgerFileRefusesLinks(t *testing.T) {
	newComp := func(path string) (*usageComponent, *bytes.Buffer) {
		var log bytes.Buffer
		d := &Daemon{log: logline.New(&log, nil)}
		c := newUsage(d)
		c.path = path
		c.ledger = usage.NewLedger("boot-1")
		return c, &log
	}
	t.Run("temporary file is a link", func(t *testing.T) {
		dir := t.TempDir()
		victim := filepath.Join(t.TempDir(), "shadow")
		if err := os.WriteFile(victim, []byte("root:secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "connmgr", "usage")
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.Symlink(victim, path+".new."+strconv.Itoa(os.Getpid())); err != nil { // the pid is no secret
			t.Fatal(err)
		}
		c, log := newComp(path)
		c.write()
		if b, _ := os.ReadFile(victim); string(b) != "root:secret\n" {
			t.Fatalf("the link's target was overwritten: %q", b)
		}
		fi, err := os.Lstat(path)
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("no ledger written (%v); log: %s", err, log)
		}
		if fi, _ := os.Stat(victim); fi.Mode().Perm() != 0o600 {
			t.Fatalf("the target's mode changed: %v", fi.Mode())
		}
	})
	t.Run("ledger is a link", func(t *testing.T) {
		dir := t.TempDir()
		victim := filepath.Join(t.TempDir(), "secret")
		secret := "connmgr-usage 1\nboot boot-1\nlink ethnet eth0 2 0 0 5 5 0 0\n"
		if err := os.WriteFile(victim, []byte(secret), 0o600); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "usage")
		if err := os.Symlink(victim, path); err != nil {
			t.Fatal(err)
		}
		c, log := newComp(path)
		c.load("boot-1")
		if _, ok := c.ledger.Links["ethnet"]; ok {
			t.Fatalf("the ledger was read through a link; log: %s", log)
		}
		if b, _ := os.ReadFile(victim); string(b) != secret {
			t.Fatalf("the link's target was changed: %q", b)
		}
	})
	t.Run("directory others may write", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "connmgr")
		os.Mkdir(dir, 0o777)
		os.Chmod(dir, 0o777)
		path := filepath.Join(dir, "usage")
		c, log := newComp(path)
		c.write()
		if _, err := os.Lstat(path); err == nil {
			t.Fatal("ledger written in a directory everyone may write to")
		}
		if !strings.Contains(log.String(), "usage ledger not written") {
			t.Fatalf("nothing logged: %s", log)
		}
	})
}

// A connmgr killed between writing its temporary ledger and renaming it
// leaves the file (each process has its own): the next one removes those of
// processes that are gone, not those of a connmgr still running.
func TestUsageLedgerDeadTemps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "connmgr")
	os.Mkdir(dir, 0o755)
	path := filepath.Join(dir, "usage")
	dead, live := path+".new.2147483646", path+".new."+strconv.Itoa(os.Getppid())
	for _, f := range []string{dead, live} {
		if err := os.WriteFile(f, []byte("connmgr-usage 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var log bytes.Buffer
	c := newUsage(&Daemon{log: logline.New(&log, nil)})
	c.path = path
	c.load("boot-1")
	if _, err := os.Stat(dead); err == nil {
		t.Error("a dead process's temporary ledger was left")
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live process's temporary ledger was removed: %v", err)
	}
}
