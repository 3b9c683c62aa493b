package usage

import (
	"math/rand/v2"
	"strconv"
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
		l.Observe(at, at.Sub(day)+time.Hour, "modemnet", dev, idx, Bytes{rx, tx})
		if got := l.Links["modemnet"].Month(); got != want {
			t.Fatalf("%v %s/%d %d/%d: month %+v, want %+v", at, dev, idx, rx, tx, got, want)
		}
	}
	step(day, "wwan0", 5, 1000, 500, Bytes{1000, 500})                                            // a ledger starts with the boot
	step(day.Add(time.Minute), "wwan0", 5, 3000, 700, Bytes{3000, 700})                           // grows
	step(day.Add(2*time.Minute), "wwan0", 9, 100, 50, Bytes{3100, 750})                           // re-created (new index)
	step(day.Add(3*time.Minute), "wwan0", 10, 50, 60, Bytes{3100 + 50, 750 + 60})                 // re-created again
	step(day.Add(4*time.Minute), "3g-modemnet", 11, 10, 10, Bytes{3160, 820})                     // another device (PPP)
	step(time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC), "3g-modemnet", 11, 110, 30, Bytes{100, 20}) // a new month
	// Restart of connmgr: the ledger read back goes on where it was, the limits
	// announced as reached with it.
	l.Reached["modemnet"], l.Reached["ethnet"] = true, false
	back, err := ParseLedger("/var/run/connmgr/usage", l.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !back.Of("boot-a", "4096") || back.Of("boot-a", "8192") || back.Of("boot-b", "4096") || back.Month != "2027-01" || *back.Links["modemnet"] != *l.Links["modemnet"] ||
		!back.Reached["modemnet"] || back.Reached["ethnet"] || len(back.Reached) != 1 {
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
		{ledgerMagic + "\nseen 1764000000 0\n", "f:2: seen \"1764000000\" \"0\": not a wall time (s) and a positive time since the boot (ns)"},
		{ledgerMagic + "\nseen 1764000000 -5\n", "f:2: seen"},
	} {
		if _, err := ParseLedger("f", []byte(c.in)); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: %v, want %s", c.in, err, c.want)
		}
	}
}

func FuzzParseLedger(f *testing.F) {
	l := NewLedger("b")
	l.Observe(day, time.Hour, "ethnet", "eth0", 2, Bytes{5, 6})
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

// ledgerStep observes network's device at (wall, since boot) and checks the month's bytes.
type ledgerStep struct {
	wall   time.Time
	boot   time.Duration
	dev    string
	idx    int
	rx, tx uint64
	want   Bytes
	month  string
}

func runLedger(t *testing.T, l *Ledger, steps []ledgerStep) {
	t.Helper()
	for i, s := range steps {
		l.Observe(s.wall, s.boot, "modemnet", s.dev, s.idx, Bytes{s.rx, s.tx})
		if got := l.Links["modemnet"].Month(); got != s.want || l.Month != s.month {
			t.Fatalf("step %d (%v, boot+%v, %s/%d %d/%d): month %s %+v, want %s %+v", i, s.wall, s.boot, s.dev, s.idx, s.rx, s.tx,
				l.Month, got, s.month, s.want)
		}
	}
}

// An OpenWrt router has no real-time clock: it boots at its image's build
// date (or the newest file's time in /etc, sysfixtime) and NTP later sets
// the clock, months or years forward, or backwards when the saved time was
// ahead. Months follow the wall clock, but a jump of the clock is no month
// passing: the bytes counted so far are this month's, the month is not
// started afresh (nor the monthly limit lifted); time since the boot
// (monotonic) says how long really passed.
func TestLedgerClockJumps(t *testing.T) {
	build := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC) // the image's build date
	ntp := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	t.Run("NTP sets the clock years forward after the boot", func(t *testing.T) {
		runLedger(t, NewLedger("b"), []ledgerStep{
			{build.Add(40 * time.Second), 40 * time.Second, "wwan0", 5, 1000, 500, Bytes{1000, 500}, "2025-06"},
			{ntp, 70 * time.Second, "wwan0", 5, 3000, 700, Bytes{3000, 700}, "2026-12"},
			{ntp.Add(30 * time.Second), 100 * time.Second, "wwan0", 5, 3500, 800, Bytes{3500, 800}, "2026-12"},
		})
	})
	t.Run("clock set back across a month's start and forward again", func(t *testing.T) {
		dec := time.Date(2026, 12, 1, 0, 5, 0, 0, time.UTC)
		runLedger(t, NewLedger("b"), []ledgerStep{
			{dec, time.Hour, "wwan0", 5, 1000, 500, Bytes{1000, 500}, "2026-12"},
			{dec.Add(-2 * time.Hour), time.Hour + 30*time.Second, "wwan0", 5, 2000, 600, Bytes{2000, 600}, "2026-11"},
			{dec.Add(time.Minute), time.Hour + time.Minute, "wwan0", 5, 3000, 700, Bytes{3000, 700}, "2026-12"},
		})
	})
	t.Run("a month really passes (monotonic time agrees)", func(t *testing.T) {
		end := time.Date(2026, 12, 31, 23, 59, 50, 0, time.UTC)
		runLedger(t, NewLedger("b"), []ledgerStep{
			{end, time.Hour, "wwan0", 5, 1000, 500, Bytes{1000, 500}, "2026-12"},
			{end.Add(30 * time.Second), time.Hour + 30*time.Second, "wwan0", 5, 1200, 600, Bytes{200, 100}, "2027-01"},
		})
	})
	t.Run("a month passes while connmgr is stopped, read back from the file", func(t *testing.T) {
		end := time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)
		l := NewLedger("b")
		runLedger(t, l, []ledgerStep{{end, time.Hour, "wwan0", 5, 1000, 500, Bytes{1000, 500}, "2026-12"}})
		back, err := ParseLedger("f", l.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		runLedger(t, back, []ledgerStep{{end.Add(2 * time.Hour), 3 * time.Hour, "wwan0", 5, 1300, 600, Bytes{300, 100}, "2027-01"}})
	})
	t.Run("NTP's jump while connmgr is stopped, read back from the file", func(t *testing.T) {
		l := NewLedger("b")
		runLedger(t, l, []ledgerStep{{build.Add(40 * time.Second), 40 * time.Second, "wwan0", 5, 1000, 500, Bytes{1000, 500}, "2025-06"}})
		back, err := ParseLedger("f", l.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		runLedger(t, back, []ledgerStep{{ntp, 2 * time.Minute, "wwan0", 5, 1300, 600, Bytes{1300, 600}, "2026-12"}})
	})
}

// Counters that fall without the device being re-created: a driver whose
// counters are 32 bits (struct net_device_stats on a 32-bit MIPS router)
// wraps at 4 GiB, one direction at a time. The wrapped direction goes on
// past 2^32; the other is not counted again. A device renamed (same
// interface index) is the same device: its bytes are not counted twice.
func TestLedgerCountersWrapAndRename(t *testing.T) {
	const g4 = 1 << 32
	runLedger(t, NewLedger("b"), []ledgerStep{
		{day, time.Hour, "eth1", 3, g4 - 1000, 100_000_000, Bytes{g4 - 1000, 100_000_000}, "2026-12"},
		{day.Add(30 * time.Second), time.Hour + 30*time.Second, "eth1", 3, 5000, 100_000_500, Bytes{g4 + 5000, 100_000_500}, "2026-12"},
		{day.Add(time.Minute), time.Hour + time.Minute, "eth1", 3, 9000, 100_000_900, Bytes{g4 + 9000, 100_000_900}, "2026-12"},
		// Renamed (ip link set eth1 name wan): same index, counters go on.
		{day.Add(2 * time.Minute), time.Hour + 2*time.Minute, "wan", 3, 9500, 100_001_000, Bytes{g4 + 9500, 100_001_000}, "2026-12"},
		// Re-created (new index): its counters begin anew and add up.
		{day.Add(3 * time.Minute), time.Hour + 3*time.Minute, "wan", 8, 100, 200, Bytes{g4 + 9600, 100_001_200}, "2026-12"},
		// Counters of a 64-bit driver reset (same index, far from 2^32): what is there counts.
		{day.Add(4 * time.Minute), time.Hour + 4*time.Minute, "wan", 8, 50, 300, Bytes{g4 + 9650, 100_001_300}, "2026-12"},
	})
}

// A look without the device's interface index (the lookup failed, or the
// device was re-created between reading the counters and its index) says
// nothing about which device the counters are of: it is skipped, not taken
// as a new device (whose whole life would be counted again).
func TestLedgerUnknownIndex(t *testing.T) {
	runLedger(t, NewLedger("b"), []ledgerStep{
		{day, time.Hour, "wwan0", 5, 1000, 500, Bytes{1000, 500}, "2026-12"},
		{day.Add(30 * time.Second), time.Hour + 30*time.Second, "wwan0", 0, 1100, 600, Bytes{1000, 500}, "2026-12"},
		{day.Add(time.Minute), time.Hour + time.Minute, "wwan0", 5, 1200, 700, Bytes{1200, 700}, "2026-12"},
	})
}

// Whatever a device's counters do within a month (grow, wrap at 32 bits,
// reset, the device re-created under a new index, renamed, unknown index,
// the wall clock jumping either way by less than a month's boundary's
// reach), the month's bytes never go backwards.
func TestLedgerNeverBackwards(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	for run := range 200 {
		l := NewLedger("b")
		wall, boot := time.Date(2026, 12, 10, 0, 0, 0, 0, time.UTC), time.Minute
		idx, cur := 5, Bytes{}
		var prev Bytes
		for step := range 100 {
			switch rng.IntN(10) {
			case 0:
				idx, cur = idx+1, Bytes{} // re-created
			case 1:
				cur = Bytes{rng.Uint64N(1000), rng.Uint64N(1000)} // reset
			case 2:
				cur.Rx = (cur.Rx + rng.Uint64N(1<<31)) % (1 << 32) // 32-bit wrap perhaps
			case 3:
				wall = wall.Add(time.Duration(rng.IntN(10)-5) * 24 * time.Hour) // jump
			}
			cur = cur.add(Bytes{rng.Uint64N(1 << 20), rng.Uint64N(1 << 20)})
			d := time.Duration(rng.IntN(60)) * time.Second
			wall, boot = wall.Add(d), boot+d
			i := idx
			if rng.IntN(20) == 0 {
				i = 0
			}
			l.Observe(wall, boot, "m", "wwan"+strconv.Itoa(rng.IntN(2)), i, cur)
			lk := l.Links["m"]
			if lk == nil {
				continue
			}
			got := lk.Month()
			if got.Rx < prev.Rx || got.Tx < prev.Tx {
				t.Fatalf("run %d step %d: month went from %+v to %+v (ledger %+v)", run, step, prev, got, *lk)
			}
			prev = got
		}
	}
}
