package ipset_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/firewall/fwtest"
	"github.com/afero/af-conn/internal/firewall/ipset"
)

func TestAgainstKernel(t *testing.T) {
	ns := fwtest.NewNS(t, "afc-ips")
	c, err := ipset.Dial(ns.FD())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := c.Protocol(); err != nil || v < 6 {
		t.Fatalf("protocol %d, %v", v, err)
	}
	opts := ipset.CreateOptions{Type: "hash:ip", Family: ipset.INet, Timeout: true, MaxElem: 3, Comment: true}
	if err := c.Create("t4", opts, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("t4", opts, false); !errors.Is(err, ipset.ErrExist) {
		t.Errorf("second create: %v", err)
	}
	if err := c.Create("t4", opts, true); err != nil {
		t.Errorf("create with existOK: %v", err)
	}
	a1, a2, a3, a4 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.4")
	if err := c.Add("t4", []ipset.Entry{{Addr: a1, Timeout: time.Hour, Comment: "one"}, {Addr: a2}}, true); err != nil {
		t.Fatal(err)
	}
	out := ns.MustExec(t, "ipset", "list", "t4")
	for _, want := range []string{`198.18.0.1 timeout 3`, `comment "one"`, "198.18.0.2 timeout 0", "maxelem 3", "Number of entries: 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("ipset list lacks %q:\n%s", want, out)
		}
	}
	// -exist: re-adding updates the timeout (and the comment: give it again) instead of failing.
	if err := c.Add("t4", []ipset.Entry{{Addr: a1, Timeout: 10 * time.Second, Comment: "one"}}, true); err != nil {
		t.Fatal(err)
	}
	if err := c.Add("t4", []ipset.Entry{{Addr: a1}}, false); !errors.Is(err, ipset.ErrExist) {
		t.Errorf("add existing without existOK: %v", err)
	}
	s, err := c.List("t4", false)
	if err != nil {
		t.Fatal(err)
	}
	if s.Type != "hash:ip" || s.Family != ipset.INet || s.MaxElem != 3 || s.Elements != 2 || !s.Timeout || len(s.Entries) != 2 {
		t.Fatalf("list: %+v", s)
	}
	for _, e := range s.Entries {
		if e.Addr == a1 && (e.Timeout > 10*time.Second || e.Timeout < 5*time.Second || e.Comment != "one") {
			t.Errorf("entry after refresh: %+v", e)
		}
	}
	if err := c.Add("t4", []ipset.Entry{{Addr: a3}, {Addr: a4}}, true); !errors.Is(err, ipset.ErrFull) {
		t.Errorf("add past maxelem: %v", err)
	}
	if ok, err := c.Test("t4", ipset.Entry{Addr: a3}); !ok || err != nil {
		t.Errorf("test a3 (added before the set got full): %v %v", ok, err)
	}
	if ok, err := c.Test("t4", ipset.Entry{Addr: a4}); ok || err != nil {
		t.Errorf("test a4: %v %v", ok, err)
	}
	if err := c.Del("t4", []ipset.Entry{{Addr: a4}, {Addr: a3}}, true); err != nil {
		t.Errorf("del with an absent entry and missingOK: %v", err)
	}
	if err := c.Del("t4", []ipset.Entry{{Addr: a4}}, false); !errors.Is(err, ipset.ErrExist) {
		t.Errorf("del absent without missingOK: %v", err)
	}

	// IPv6 and nets; swap; destroy; names.
	if err := c.Create("n6", ipset.CreateOptions{Type: "hash:net", Family: ipset.INet6}, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Add("n6", []ipset.Entry{{Addr: netip.MustParseAddr("2001:db8::"), Bits: 32}}, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Add("n6", []ipset.Entry{{Addr: a1}}, false); err == nil {
		t.Error("IPv4 entry in an inet6 set accepted")
	}
	if err := c.Create("n6b", ipset.CreateOptions{Type: "hash:net", Family: ipset.INet6}, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Swap("n6", "n6b"); err != nil {
		t.Fatal(err)
	}
	if s, err := c.List("n6b", false); err != nil || len(s.Entries) != 1 || s.Entries[0].Bits != 32 {
		t.Errorf("after swap: %+v %v", s, err)
	}
	names, err := c.Names()
	if err != nil || !slices.Equal(names, []string{"t4", "n6", "n6b"}) {
		t.Errorf("names: %q %v", names, err)
	}
	ns.MustExec(t, "ip6tables", "-A", "INPUT", "-m", "set", "--match-set", "n6b", "src", "-j", "ACCEPT")
	if err := c.Destroy("n6b"); err == nil {
		t.Error("destroyed a set a rule uses")
	}
	for _, n := range []string{"t4", "n6"} {
		if err := c.Flush(n); err != nil {
			t.Error(err)
		}
		if err := c.Destroy(n); err != nil {
			t.Error(err)
		}
	}
	if _, err := c.List("t4", true); !errors.Is(err, ipset.ErrNotFound) {
		t.Errorf("list destroyed set: %v", err)
	}
	if err := c.Create(strings.Repeat("x", 32), opts, false); err == nil {
		t.Error("32-byte name accepted")
	}
}
