// Package usage owns what the uplinks cost: bytes in and out per uplink
// from the kernel's link counters, kept per calendar month (UTC) across
// connmgr restarts within a boot in a small ledger file, and what one probe
// round of each method costs on the wire (the unit of probe budgets).
//
// The kernel counts a device's bytes from its creation; a device that is
// re-created (a modem reset, a PPP session's 3g-modemnet) starts again at
// zero. The ledger notes, per uplink, the counters at the start of the
// month (or of the device's life, if later), the last ones seen, and the
// bytes of the device's earlier lives this month, so a restart of connmgr
// (the ledger is in /var/run, a tmpfs) or of the device loses nothing but
// what moved between the last look and a re-creation. A reboot starts a
// new ledger: the first one of a boot counts each device from its
// creation, i.e. from about the boot.
//
// Months follow the wall clock, whose jumps (NTP setting a router that has
// no real-time clock, months or years after its image's build date) are no
// month passing: the time since the boot says how much time really passed.
// A counter that falls on the same device (same interface index) wrapped
// at 32 bits, or was reset by its driver; a device renamed is the same one.
package usage

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Bytes are a device's received (Rx) and sent (Tx) bytes.
type Bytes struct{ Rx, Tx uint64 }

// Total is Rx + Tx.
func (b Bytes) Total() uint64 { return b.Rx + b.Tx }

func (b Bytes) sub(o Bytes) Bytes { return Bytes{b.Rx - o.Rx, b.Tx - o.Tx} }
func (b Bytes) add(o Bytes) Bytes { return Bytes{b.Rx + o.Rx, b.Tx + o.Tx} }

// ReadNetDev reads and parses a /proc/net/dev file (path: /proc/net/dev for the process's
// network namespace, /proc/thread-self/net/dev for the calling thread's).
func ReadNetDev(path string) (map[string]Bytes, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseNetDev(b)
}

// ParseNetDev reads /proc/net/dev (the calling process's network
// namespace): the byte counters of every device, by name.
func ParseNetDev(b []byte) (map[string]Bytes, error) {
	out := map[string]Bytes{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		if line <= 2 {
			continue // the two header lines
		}
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			return nil, fmt.Errorf("/proc/net/dev line %d: no ':' after the device name", line)
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			return nil, fmt.Errorf("/proc/net/dev line %d: %d counters, want 16", line, len(f))
		}
		rx, err1 := strconv.ParseUint(f[0], 10, 64)
		tx, err2 := strconv.ParseUint(f[8], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("/proc/net/dev line %d: byte counters %q, %q are not numbers", line, f[0], f[8])
		}
		out[strings.TrimSpace(name)] = Bytes{Rx: rx, Tx: tx}
	}
	return out, sc.Err()
}

// Link is the ledger's account of one uplink.
type Link struct {
	Device  string
	Ifindex int
	Base    Bytes // the device's counters when this month's account of its current life began
	Last    Bytes // the counters last seen
	Earlier Bytes // bytes of the device's earlier lives this month
}

// Month returns the uplink's bytes this month.
func (l *Link) Month() Bytes { return l.Earlier.add(l.Last.sub(l.Base)) }

// Ledger is every uplink's account in one boot.
type Ledger struct {
	Boot string // /proc/sys/kernel/random/boot_id
	// Netns is the network namespace's cookie (unique within a boot,
	// never reused, unlike its inode): a ledger left by another namespace
	// that had the same inode, or the same file name, is not this one's.
	Netns string
	Month string // "2006-01", UTC
	// SeenWall and SeenBoot are the last look's time on the wall clock and
	// since the boot (zero: no look yet, or a ledger that did not say).
	SeenWall time.Time
	SeenBoot time.Duration
	Links    map[string]*Link
	// Reached names the uplinks whose monthly limit was announced as
	// reached (kept by the daemon: a restart is no news).
	Reached map[string]bool
}

// Of says whether the ledger is the one of this boot and network
// namespace (a ledger of another boot or namespace counts nothing here).
func (l *Ledger) Of(boot, netns string) bool { return l.Boot == boot && l.Netns == netns }

// NewLedger returns an empty ledger of boot.
func NewLedger(boot string) *Ledger {
	return &Ledger{Boot: boot, Links: map[string]*Link{}, Reached: map[string]bool{}}
}

// MonthOf is the ledger's month of t.
func MonthOf(t time.Time) string { return t.UTC().Format("2006-01") }

// Observe takes an uplink's device counters at now (wall clock), boot
// (time since the boot, CLOCK_BOOTTIME). A look without the device's
// interface index (ifindex 0: unknown) is skipped: the counters might be
// another device's, whose whole life would be counted again.
//
// Months follow the wall clock, but an OpenWrt router has no real-time
// clock: it boots at its image's build date and NTP sets the clock later,
// months or years forward (or back). A jump of the clock is no month
// passing: the last look is placed on the clock as it is now by the time
// since the boot that passed since (monotonic), and only when that places
// it in an earlier month does a new month begin. The month's bytes so far
// stay, under the month the clock names now.
func (l *Ledger) Observe(now time.Time, boot time.Duration, network, device string, ifindex int, cur Bytes) {
	if ifindex <= 0 {
		return
	}
	m := MonthOf(now)
	last := l.SeenWall
	if l.SeenBoot > 0 && boot >= l.SeenBoot {
		last = now.Add(-(boot - l.SeenBoot))
	}
	switch {
	case l.Month == "":
		l.Month = m
	case last.IsZero() && m != l.Month, !last.IsZero() && MonthOf(last) != m:
		// A new month: what moved since the last look counts for it.
		for _, lk := range l.Links {
			lk.Base, lk.Earlier = lk.Last, Bytes{}
		}
		l.Month = m
	default:
		l.Month = m // the clock jumped: the same month, maybe under another name
	}
	l.SeenWall, l.SeenBoot = now, boot
	lk := l.Links[network]
	if lk == nil {
		// First look in this boot: the device's whole life counts (a
		// ledger starts with the boot).
		lk = &Link{Device: device, Ifindex: ifindex}
		l.Links[network] = lk
	}
	switch {
	case lk.Ifindex != ifindex:
		// Another device, or the same re-created: its counters began anew.
		lk.Earlier, lk.Base = lk.Month(), Bytes{}
	case cur.Rx < lk.Last.Rx || cur.Tx < lk.Last.Tx:
		// The same device (an index is not reused), its counters fell: a
		// 32-bit counter wrapped, or the driver reset them.
		lk.Earlier = lk.Month().add(Bytes{moved(lk.Last.Rx, cur.Rx), moved(lk.Last.Tx, cur.Tx)})
		lk.Base = cur
	}
	lk.Device, lk.Ifindex = device, ifindex // a device renamed keeps its index
	lk.Last = cur
}

// moved is what a counter moved from last to cur: past a 32-bit wrap when
// it fell from within 2^31 below 2^32 to within 2^31 above 0 (a driver's
// 32-bit counters on a 32-bit kernel), else from zero (reset).
func moved(last, cur uint64) uint64 {
	const wrap = 1 << 32
	switch {
	case cur >= last:
		return cur - last
	case last < wrap && wrap-last+cur < wrap/2:
		return wrap - last + cur
	}
	return cur
}

// ledgerMagic starts a ledger file.
const ledgerMagic = "connmgr-usage 1"

// Marshal writes the ledger in its file format.
func (l *Ledger) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(ledgerMagic + "\n")
	if l.Boot != "" {
		fmt.Fprintf(&b, "boot %s\n", l.Boot)
	}
	if l.Netns != "" {
		fmt.Fprintf(&b, "netns %s\n", l.Netns)
	}
	if l.Month != "" {
		fmt.Fprintf(&b, "month %s\n", l.Month)
	}
	if l.SeenBoot > 0 {
		fmt.Fprintf(&b, "seen %d %d\n", l.SeenWall.Unix(), int64(l.SeenBoot))
	}
	for name, lk := range l.Links {
		fmt.Fprintf(&b, "link %s %s %d %d %d %d %d %d %d\n", name, lk.Device, lk.Ifindex,
			lk.Base.Rx, lk.Base.Tx, lk.Last.Rx, lk.Last.Tx, lk.Earlier.Rx, lk.Earlier.Tx)
	}
	for name, on := range l.Reached {
		if on {
			fmt.Fprintf(&b, "reached %s\n", name)
		}
	}
	return b.Bytes()
}

// ParseLedger reads a ledger file; path names it in errors.
func ParseLedger(path string, b []byte) (*Ledger, error) {
	l := NewLedger("")
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	bad := func(why string) error { return fmt.Errorf("%s:%d: %s", path, line, why) }
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		switch {
		case line == 1:
			if sc.Text() != ledgerMagic {
				return nil, bad("not a connmgr usage ledger (want first line " + strconv.Quote(ledgerMagic) + ")")
			}
		case len(f) == 2 && f[0] == "boot":
			l.Boot = f[1]
		case len(f) == 2 && f[0] == "netns":
			l.Netns = f[1]
		case len(f) == 2 && f[0] == "month":
			if _, err := time.Parse("2006-01", f[1]); err != nil {
				return nil, bad("month " + strconv.Quote(f[1]) + " is not YYYY-MM")
			}
			l.Month = f[1]
		case len(f) == 3 && f[0] == "seen":
			wall, err1 := strconv.ParseInt(f[1], 10, 64)
			boot, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil || boot <= 0 {
				return nil, bad(fmt.Sprintf("seen %q %q: not a wall time (s) and a positive time since the boot (ns)", f[1], f[2]))
			}
			l.SeenWall, l.SeenBoot = time.Unix(wall, 0).UTC(), time.Duration(boot)
		case len(f) == 2 && f[0] == "reached":
			l.Reached[f[1]] = true
		case len(f) == 10 && f[0] == "link":
			var n [7]uint64
			for i := range n {
				v, err := strconv.ParseUint(f[3+i], 10, 64)
				if err != nil {
					return nil, bad(fmt.Sprintf("link %s: field %d %q is not a number", f[1], 3+i, f[3+i]))
				}
				n[i] = v
			}
			if n[0] > 1<<31 {
				return nil, bad(fmt.Sprintf("link %s: interface index %d out of range", f[1], n[0]))
			}
			lk := &Link{Device: f[2], Ifindex: int(n[0]), Base: Bytes{n[1], n[2]}, Last: Bytes{n[3], n[4]}, Earlier: Bytes{n[5], n[6]}}
			if lk.Last.Rx < lk.Base.Rx || lk.Last.Tx < lk.Base.Tx {
				return nil, bad(fmt.Sprintf("link %s: last counters below the base", f[1]))
			}
			l.Links[f[1]] = lk
		default:
			return nil, bad(fmt.Sprintf("unknown line %q", sc.Text()))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if line == 0 {
		return nil, fmt.Errorf("%s: empty", path)
	}
	return l, nil
}
