package usage

import (
	"strings"
	"testing"
	"time"
)

const netDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    6486      60    0    0    0     0          0         0     6486      60    0    0    0     0       0          0
  eth0: 18446744073709551615 7 0 0 0 0 0 0 1234 5 0 0 0 0 0 0
wwan0:12 1 0 0 0 0 0 0 34 1 0 0 0 0 0 0
`

func TestParseNetDev(t *testing.T) {
	m, err := ParseNetDev([]byte(netDev))
	if err != nil {
		t.Fatal(err)
	}
	if m["lo"] != (Bytes{6486, 6486}) || m["eth0"] != (Bytes{1<<64 - 1, 1234}) || m["wwan0"] != (Bytes{12, 34}) || len(m) != 3 {
		t.Fatalf("%+v", m)
	}
	for _, bad := range []string{
		netDev + "eth1 1 2 3\n",
		netDev + "eth1: 1 2 3\n",
		netDev + "eth1: x 0 0 0 0 0 0 0 1 0 0 0 0 0 0 0\n",
		netDev + "eth1: 1 0 0 0 0 0 0 0 -1 0 0 0 0 0 0 0\n",
	} {
		if _, err := ParseNetDev([]byte(bad)); err == nil || !strings.Contains(err.Error(), "/proc/net/dev line 6") {
			t.Errorf("bad line accepted or error without its line: %v", err)
		}
	}
}

func FuzzParseNetDev(f *testing.F) {
	f.Add([]byte(netDev))
	f.Fuzz(func(t *testing.T, b []byte) { ParseNetDev(b) })
}

var day = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func TestLedger(t *testing.T) {
	l := NewLedger("boot-a")
	l.Netns = "4096"
	step := func(at time.Time, dev string, idx int, rx, tx uint64, want Bytes) {
		t.Helper()
		l.Observe(at, "modemnet", dev, idx, Bytes{rx, tx})
		if got := l.Links["modemnet"].Month(); got != want {
			t.Fatalf("%v %s/%d %d/%d: month %+v, want %+v", at, dev, idx, rx, tx, got, want)
		}
	}
	step(day, "wwan0", 5, 1000, 500, Bytes{1000, 500})                                            // a ledger starts with the boot
	step(day.Add(time.Minute), "wwan0", 5, 3000, 700, Bytes{3000, 700})                           // grows
	step(day.Add(2*time.Minute), "wwan0", 9, 100, 50, Bytes{3100, 750})                           // re-created (new index)
	step(day.Add(3*time.Minute), "wwan0", 9, 50, 60, Bytes{3100 + 50, 750 + 60})                  // counters fell: re-created again
	step(day.Add(4*time.Minute), "3g-modemnet", 11, 10, 10, Bytes{3160, 820})                     // another device (PPP)
	step(time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC), "3g-modemnet", 11, 110, 30, Bytes{100, 20}) // a new month
	// Restart of connmgr: the ledger read back goes on where it was.
	back, err := ParseLedger("/var/run/connmgr/usage", l.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !back.Of("boot-a", "4096") || back.Of("boot-a", "8192") || back.Of("boot-b", "4096") || back.Month != "2027-01" || *back.Links["modemnet"] != *l.Links["modemnet"] {
		t.Fatalf("read back %+v %+v, wrote %+v", back, back.Links["modemnet"], l.Links["modemnet"])
	}
	l = back
	step(time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), "3g-modemnet", 11, 1110, 30, Bytes{1100, 20})
}

func TestParseLedgerErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "f: empty"},
		{"hello\n", "f:1: not a connmgr usage ledger"},
		{ledgerMagic + "\nmonth 2026-13\n", "f:2: month \"2026-13\" is not YYYY-MM"},
		{ledgerMagic + "\nlink a eth0 1 2 3 4 5 6 x\n", "f:2: link a: field 9 \"x\" is not a number"},
		{ledgerMagic + "\nlink a eth0 1 9 9 4 4 0 0\n", "f:2: link a: last counters below the base"},
		{ledgerMagic + "\nlink a eth0 9999999999 0 0 0 0 0 0\n", "f:2: link a: interface index 9999999999 out of range"},
		{ledgerMagic + "\nbogus\n", "f:2: unknown line \"bogus\""},
	} {
		if _, err := ParseLedger("f", []byte(c.in)); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: %v, want %s", c.in, err, c.want)
		}
	}
}

func FuzzParseLedger(f *testing.F) {
	l := NewLedger("b")
	l.Observe(day, "ethnet", "eth0", 2, Bytes{5, 6})
	f.Add(l.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLedger("f", b)
		if err != nil {
			return
		}
		for _, lk := range l.Links {
			_ = lk.Month() // never below zero: the parser refuses last < base
		}
		if _, err := ParseLedger("f", l.Marshal()); err != nil {
			t.Fatalf("a ledger that parsed does not parse again: %v", err)
		}
	})
}
