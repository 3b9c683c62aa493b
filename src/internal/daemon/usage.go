package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/usage"
)

// NoticeUsage is the ubus event of an uplink reaching its monthly limit (and of the limit
// lifting when a new month begins).
const NoticeUsage = "connmgr.usage"

// DefaultUsageLedger is where connmgr keeps its usage ledger: /var/run is a tmpfs on OpenWrt,
// so the ledger outlives a restart of connmgr but not a reboot (no flash wear).
const DefaultUsageLedger = "/var/run/connmgr/usage"

// usageEvery is how often the uplinks' counters are read and the ledger written.
const usageEvery = 30 * time.Second

// usageComponent keeps the usage ledger (package usage): bytes in and out per uplink from the
// kernel's link counters, this month's bytes, and the monthly limits.
type usageComponent struct {
	d       *Daemon
	path    string // "" keeps the ledger in memory only (tests)
	ledger  *usage.Ledger
	cur     map[string]usage.Bytes // the devices' counters at the last look
	limited map[string]bool
	timer   Timer
	// writeErr is the last failure to write the ledger, logged once ("": none).
	writeErr string
	written  time.Time         // the last write
	prev     map[string]uint64 // the months' bytes at prevAt, for their rate (nextLook)
	prevAt   time.Time
}

func newUsage(d *Daemon) *usageComponent {
	return &usageComponent{d: d, path: d.opts.UsageLedger, cur: map[string]usage.Bytes{}, limited: map[string]bool{},
		prev: map[string]uint64{}}
}

// UsageLedgerPath is DefaultUsageLedger, or beside it a ledger of this network namespace
// when connmgr does not run in init's (test worlds on a shared host; also when init's cannot
// be read, as in a container).
func UsageLedgerPath() string {
	self, err1 := os.Readlink("/proc/self/ns/net")
	init, err2 := os.Readlink("/proc/1/ns/net")
	if err1 != nil || (err2 == nil && self == init) {
		return DefaultUsageLedger
	}
	return DefaultUsageLedger + "." + strings.Trim(strings.TrimPrefix(self, "net:"), "[]")
}

// soNetnsCookie is SO_NETNS_COOKIE (Linux 5.14; 71 on the architectures OpenWrt runs on).
const soNetnsCookie = 71

// netnsCookie is this network namespace's cookie: unique within a boot and never reused (an
// inode is, once the namespace is gone). "" when the kernel has none (older than 5.14): then
// the boot alone tells ledgers apart.
func netnsCookie() string {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	var v uint64
	l := uint32(unsafe.Sizeof(v))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, soNetnsCookie,
		uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0); e != 0 || l != 8 {
		return ""
	}
	return strconv.FormatUint(v, 10)
}

func (c *usageComponent) start(context.Context) error {
	boot := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		boot = strings.TrimSpace(string(b))
	}
	c.load(boot)
	c.sample()
	return nil
}

// load takes the ledger file of this boot, if there is one, else starts afresh.
func (c *usageComponent) load(boot string) {
	c.ledger = usage.NewLedger(boot)
	c.ledger.Netns = netnsCookie()
	if c.path == "" {
		return
	}
	removeDeadTemps(c.path)
	b, err := readLedgerFile(c.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		c.d.log.Warn("usage ledger unreadable; counting afresh", "file", c.path, "err", err)
	default:
		l, err := usage.ParseLedger(c.path, b)
		switch {
		case err != nil:
			c.d.log.Warn("usage ledger invalid; counting afresh", "err", err)
		case !l.Of(boot, c.ledger.Netns):
			// Another boot's, or another network namespace's that had the same
			// inode (test worlds, containers): its bytes are not this one's.
			c.d.log.Info("usage ledger of an earlier boot or another network namespace; counting afresh",
				"file", c.path, "boot", l.Boot, "netns", l.Netns)
		default:
			c.ledger = l
		}
	}
	// Limits announced before a restart are not announced again (still applied at the
	// first look).
	for name, on := range c.ledger.Reached {
		c.limited[name] = on
	}
}

func (c *usageComponent) reload(_, _ *Loaded) {
	c.written = time.Time{} // written at once
	c.sample()
}

func (c *usageComponent) stop() {
	if c.timer != nil {
		c.timer.Stop()
	}
	c.observe()
	c.write()
}

type usageTick struct{}

func (usageTick) apply(d *Daemon) {
	for _, comp := range d.components {
		if u, ok := comp.(*usageComponent); ok {
			u.timer = nil
			u.sample()
		}
	}
}

// sample observes, writes the ledger (every usageEvery), and asks for the next sample.
func (c *usageComponent) sample() {
	if c.timer != nil {
		c.timer.Stop()
	}
	c.observe()
	now := c.d.clock.Now()
	if c.written.IsZero() || now.Sub(c.written) >= usageEvery {
		c.write()
		c.written = now
	}
	c.timer = c.d.after(c.nextLook(now), usageTick{})
}

// limitLookEvery is how often an uplink with a monthly limit not yet reached is looked at:
// a limit is money, and 30 s of a 150 Mbit/s LTE download are 560 MB.
const limitLookEvery = 5 * time.Second

// nextLook is when the counters are looked at next: every usageEvery, every limitLookEvery
// while an uplink has a limit not reached, and, as one nears its limit at the rate of the
// last looks, at half the time it would take to reach it (at least a second apart).
func (c *usageComponent) nextLook(now time.Time) time.Duration {
	every := usageEvery
	for _, u := range c.d.cur.Config.Uplinks {
		lk := c.ledger.Links[u.Name]
		if u.MonthlyLimit == 0 || c.limited[u.Name] || lk == nil {
			continue
		}
		every = min(every, limitLookEvery)
		month := lk.Month().Total()
		prev, ok := c.prev[u.Name]
		dt := now.Sub(c.prevAt)
		if ok && month > prev && month < u.MonthlyLimit && dt > 0 {
			rate := float64(month-prev) / dt.Seconds()
			eta := time.Duration(float64(u.MonthlyLimit-month) / rate * float64(time.Second))
			every = min(every, max(eta/2, time.Second))
		}
	}
	// The rate is measured between looks at least a second apart (status calls look too).
	if dt := now.Sub(c.prevAt); c.prevAt.IsZero() || dt >= time.Second {
		clear(c.prev)
		for name, lk := range c.ledger.Links {
			c.prev[name] = lk.Month().Total()
		}
		c.prevAt = now
	}
	return every
}

// observe reads the counters and updates the ledger and the limits.
func (c *usageComponent) observe() {
	if !c.d.uplinks.started() {
		return
	}
	// The devices' indexes before and after the counters: a device re-created meanwhile (a
	// modem reset) changed its index, and its counters may be either life's: not taken now.
	before := ifindexes()
	counters, err := usage.ReadNetDev("/proc/net/dev")
	if err != nil {
		c.d.log.Warn("link counters unreadable", "err", err)
		return
	}
	after := ifindexes()
	now := c.d.clock.Now()
	limits := map[string]uint64{}
	for _, u := range c.d.cur.Config.Uplinks {
		limits[u.Name] = u.MonthlyLimit
	}
	clear(c.cur)
	for _, cu := range c.d.uplinks.combined() {
		// The uplink's own device: a 464XLAT uplink's IPv4 goes out over it too.
		name, dev := cu.Settings.Name, ownDevice(cu)
		cur, ok := counters[dev]
		if !ok {
			continue // no such device now
		}
		idx := before[dev]
		if idx != after[dev] {
			idx = 0 // unknown: the ledger skips the look
		}
		c.cur[name] = cur
		c.ledger.Observe(now, sinceBoot(), name, dev, idx, cur)
		lk := c.ledger.Links[name]
		if lk == nil {
			continue // not looked at yet (its index unknown)
		}
		month := lk.Month().Total()
		over := limits[name] > 0 && month >= limits[name]
		// Told every time, not only on a change: an uplink whose section left the
		// configuration and came back (or whose device changed) is a new one in the
		// controllers, which knows nothing of the limit (setLimited is idempotent).
		c.d.uplinks.setLimited(name, over)
		if over == c.limited[name] {
			continue
		}
		c.limited[name] = over
		c.ledger.Reached[name] = over
		what := "monthly limit reached"
		if !over {
			what = "monthly limit lifted"
		}
		c.d.log.Warn(what, "network", name, "device", dev, "month", c.ledger.Month, "bytes", month, "limit", limits[name])
		c.d.announce(Notice{Name: NoticeUsage, Data: map[string]any{
			"network": name, "device": dev, "month": c.ledger.Month, "month_bytes": int64(month),
			"monthly_limit": int64(limits[name]), "limit_reached": over, "action": limitAction(c.d, name),
		}})
	}
}

// ifindexes are the interface indexes of the namespace's devices by name (none if they
// cannot be read).
func ifindexes() map[string]int {
	m := map[string]int{}
	ifs, err := net.Interfaces()
	if err != nil {
		return m
	}
	for _, i := range ifs {
		m[i.Name] = i.Index
	}
	return m
}

// sinceBoot is the time since the boot (CLOCK_BOOTTIME: monotonic, suspend included).
func sinceBoot() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func limitAction(d *Daemon, network string) string {
	for _, u := range d.cur.Config.Uplinks {
		if u.Name == network {
			return u.LimitAction
		}
	}
	return ""
}

// write replaces the ledger file (a crash mid-write leaves the old one).
func (c *usageComponent) write() {
	if c.path == "" {
		return
	}
	// A lasting failure (a full tmpfs) is logged once, not at every write: logd's ring
	// buffer is small, and the same line every 30 s pushes out the rest.
	err := writeLedgerFile(c.path, c.ledger.Marshal())
	switch {
	case err != nil && err.Error() != c.writeErr:
		c.d.log.Warn("usage ledger not written", "file", c.path, "err", err)
		c.writeErr = err.Error()
	case err == nil && c.writeErr != "":
		c.d.log.Info("usage ledger written again", "file", c.path)
		c.writeErr = ""
	}
}

// The ledger's directory is written by root (connmgr), so nothing in it may be a
// link someone else planted: a link at the temporary file would make connmgr
// overwrite its target. The directory must be connmgr's own and writable by it
// alone; the files are opened without following links, the temporary one
// created afresh (O_EXCL), so a link that appears meanwhile fails the write.

// writeLedgerFile writes data to path by way of path.new and a rename.
func writeLedgerFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := ownDir(dir); err != nil {
		return err
	}
	// Each process its own temporary file: a second connmgr (one started by hand beside
	// procd's) must not unlink or rename the first one's half-written file.
	tmp := path + ".new." + strconv.Itoa(os.Getpid())
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// removeDeadTemps removes the temporary ledger files of connmgr processes that are gone
// (killed between writing and renaming): each process has its own, so a respawn loop would
// otherwise leave one per crash on the tmpfs.
func removeDeadTemps(path string) {
	if ownDir(filepath.Dir(path)) != nil {
		return
	}
	temps, _ := filepath.Glob(path + ".new.*")
	for _, f := range temps {
		pid, err := strconv.Atoi(strings.TrimPrefix(f, path+".new."))
		if err == nil && pid > 0 && unix.Kill(pid, 0) == unix.ESRCH {
			os.Remove(f)
		}
	}
}

// readLedgerFile reads the ledger at path, not through a link, from a directory
// that is connmgr's own.
func readLedgerFile(path string) ([]byte, error) {
	if err := ownDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// ownDir checks that dir is a directory (not a link) owned by this process's user that
// no one else may write to.
func ownDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory (%v)", dir, fi.Mode().Type())
	case ok && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s belongs to uid %d, not connmgr's %d", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s may be written by others (mode %v)", dir, fi.Mode().Perm())
	}
	return nil
}

func (c *usageComponent) fillStatus(s *Status) {
	if !c.d.uplinks.started() {
		return
	}
	c.observe() // the counters as they are now (the ledger file waits for the next sample)
	uplinks := c.d.uplinks.combined()
	for i := range s.Uplinks {
		u := &s.Uplinks[i]
		for _, cu := range uplinks {
			if cu.Settings.Name != u.Network {
				continue
			}
			// Both families' rounds; the budgets are the uplink's, their interval the
			// longest a family in which the uplink is up has now.
			u.ProbeRounds, u.ProbeBytes, u.BudgetIntervalS, u.LimitReached = 0, 0, 0, false
			for _, v := range cu.Families {
				u.ProbeRounds += v.ProbeRounds
				u.ProbeBytes += v.ProbeBytes
				if v.State.Up() { // a family that is down has no rounds
					u.BudgetIntervalS = max(u.BudgetIntervalS, int64(v.ProbeFloor/time.Second))
				}
				u.LimitReached = u.LimitReached || v.Limited
			}
			u.ProbeBudget = uint64(cu.Settings.ProbeBudget)
			u.ProbeBudgetStandby = uint64(cu.Settings.ProbeBudgetStandby)
		}
		for _, cu := range c.d.cur.Config.Uplinks {
			if cu.Name == u.Network {
				u.MonthlyLimit = cu.MonthlyLimit
			}
		}
		if cur, ok := c.cur[u.Network]; ok {
			u.RxBytes, u.TxBytes = cur.Rx, cur.Tx
		}
		if lk := c.ledger.Links[u.Network]; lk != nil {
			m := lk.Month()
			u.MonthRxBytes, u.MonthTxBytes = m.Rx, m.Tx
		}
	}
	s.UsageMonth = c.ledger.Month
}
