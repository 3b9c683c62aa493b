// Package netmon owns watching the kernel's links, addresses, routes and
// rules of both families over netlink. It keeps a view of the watched
// devices and delivers whole per-device snapshots (uplink.Device): the
// usable global addresses of both families (IPv6 ones neither tentative,
// deprecated nor DAD-failed: rtnl.Addr.Usable), and per family the
// uplink's own default route (the lowest-metric one through the device in
// the main table, not ours: for IPv6 from an RA, proto ra, or from netifd,
// usually via a link-local gateway; among equal metrics the router of
// higher RA preference) and the gateways of all its default routes, ranked
// the same way (failover chooses among them). It coalesces bursts of netlink messages into one
// update. When the kernel drops messages (ENOBUFS:
// the socket overflowed) it subscribes again and re-dumps everything, so the
// view never stays wrong. Like tailscale's netmon, one pump goroutine owns
// the view; the consumer gets a callback per coalesced change.
package netmon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/inns"
	"github.com/afero/af-conn/internal/rtnl"
	"github.com/afero/af-conn/internal/uplink"
)

// Update is one coalesced change.
type Update struct {
	// Devices holds the snapshot of every watched device that changed
	// (all of them after a resync). Absent devices have Present false.
	Devices map[string]uplink.Device
	// Resync says the view was rebuilt from a full dump (start, overflow).
	Resync bool
	// OwnRoutesChanged says a route with protocol Options.OwnProto was
	// added or removed, in either family (somebody may have deleted ours).
	OwnRoutesChanged bool
	// RulesChanged says a policy rule (either family) was added or removed.
	RulesChanged bool
}

// Options configure a Monitor.
type Options struct {
	// Devices are the names of the devices to report.
	Devices []string
	// DeviceChanges, if set, delivers new lists of devices to report in place of Devices
	// (an uplink's layer-3 device appeared, changed or went); each is followed by an update
	// with the snapshot of every device that was not reported before.
	DeviceChanges <-chan []string
	// OwnProto is the route protocol number of our own routes; such
	// routes are not the uplinks' default routes, and changes to them
	// are reported in OwnRoutesChanged.
	OwnProto int
	// Namespace, if set, is the network namespace to watch (tests).
	Namespace *netns.NsHandle
	// RcvBuf is the netlink socket receive buffer (default 1 MiB).
	RcvBuf int
	// CarrierPoll, if set, is how often the watched devices' carrier is
	// read directly while the kernel may be batching its reports. The
	// kernel reports a carrier change at once only if its linkwatch has
	// not run in the last second; otherwise it batches the report until
	// a second after that run, while the device's IFF_LOWER_UP flag is
	// right at once. Each linkwatch run reports the links it handled
	// (RTM_NEWLINK), so the poll runs only for CarrierWindow after any
	// link message (and after start), and sleeps otherwise: an idle hub
	// does not wake for it at all. (A linkwatch run for a device in
	// another network namespace goes unseen: on a router there is one.)
	CarrierPoll time.Duration
	// CarrierWindow is how long the poll runs after a link message
	// (default 1.5 s: linkwatch's one second, and margin).
	CarrierWindow time.Duration
	// Notify receives each update, in order, from the pump goroutine.
	Notify func(Update)
	// Logf, if set, logs errors and resubscriptions.
	Logf func(format string, args ...any)
	// Debugf, if set, logs full dumps (every start has one: not worth a warning).
	Debugf func(format string, args ...any)
}

type linkInfo struct {
	name    string
	up      bool
	carrier bool
}

// defRoute is a default route as the kernel tells one from another.
type defRoute struct {
	v6     bool // an IPv6 route
	gw     netip.Addr
	metric int
}

// view is the pump goroutine's model of the kernel.
type view struct {
	links map[int]linkInfo
	// addrs are the usable addresses (true) and the deprecated but still
	// valid IPv6 ones (false), by device.
	addrs map[int]map[netip.Prefix]bool
	// routes are the default routes in the main table, by device.
	routes map[int]map[defRoute]routeInfo
}

// routeInfo is what the kernel last said of a default route beyond what
// tells it from others (an RA changes both without a message).
type routeInfo struct {
	pref int // router preference (RA): higher is better
	// until is when it expires, zero for never; for an expired one, when
	// to read the routes again.
	until   time.Time
	expired bool // it had expired (the kernel keeps it, unused, until its garbage collection)
}

// better tells whether a route of gateway gw with i beats one of gateway
// other with o of the same metric: a preferred router, then a later expiry
// (zero, never, is latest), then the lower gateway.
func (i routeInfo) better(o routeInfo, gw, other netip.Addr) bool {
	switch {
	case i.pref != o.pref:
		return i.pref > o.pref
	case !i.until.Equal(o.until):
		return i.until.IsZero() || (!o.until.IsZero() && i.until.After(o.until))
	}
	return gw.Less(other)
}

// recheckExpired is how often the routes are read while one the kernel
// keeps has expired: an RA from its router renews it without a message.
const recheckExpired = 5 * time.Second

func newView() *view {
	return &view{links: map[int]linkInfo{}, addrs: map[int]map[netip.Prefix]bool{}, routes: map[int]map[defRoute]routeInfo{}}
}

// device builds the snapshot of the device called name.
func (v *view) device(name string) uplink.Device {
	idx := -1
	var li linkInfo
	for i, l := range v.links {
		if l.name == name {
			idx, li = i, l
			break
		}
	}
	if idx < 0 {
		return uplink.Device{}
	}
	d := uplink.Device{Present: true, AdminUp: li.up, Carrier: li.carrier}
	for p, usable := range v.addrs[idx] {
		if usable {
			d.Addrs = append(d.Addrs, p)
		} else {
			d.Deprecated = append(d.Deprecated, p)
		}
	}
	byAddr := func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) }
	slices.SortFunc(d.Addrs, byAddr)
	slices.SortFunc(d.Deprecated, byAddr)
	// The uplink's own default route of a family is the one with the
	// lowest metric.
	d.HasDefault, d.Gateway, d.Routers = v.bestRoute(idx, false)
	d.HasDefault6, d.Gateway6, d.Routers6 = v.bestRoute(idx, true)
	return d
}

// bestRoute returns the gateway of the device's lowest-metric default
// route of a family (of those of that metric, the one of the preferred
// router, then the one renewed last, then the lowest gateway) that had not
// expired, whether there is one, and the gateways of all its unexpired
// default routes of the family in that order (each once). Renewed last: a
// router replaced without a final RA leaves its route for its whole
// lifetime (30 min), and its expiry, as last read, is older than its live
// successor's.
func (v *view) bestRoute(idx int, v6 bool) (bool, netip.Addr, []netip.Addr) {
	type ranked struct {
		r    defRoute
		info routeInfo
	}
	var rs []ranked
	for r, info := range v.routes[idx] {
		if r.v6 == v6 && !info.expired {
			rs = append(rs, ranked{r, info})
		}
	}
	if len(rs) == 0 {
		return false, netip.Addr{}, nil
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		switch {
		case a.r.metric != b.r.metric:
			return a.r.metric - b.r.metric
		case a.info.better(b.info, a.r.gw, b.r.gw):
			return -1
		case b.info.better(a.info, b.r.gw, a.r.gw):
			return 1
		}
		return 0
	})
	var gws []netip.Addr
	for _, x := range rs {
		if x.r.gw.IsValid() && !slices.Contains(gws, x.r.gw) {
			gws = append(gws, x.r.gw)
		}
	}
	return true, rs[0].r.gw, gws
}

// prefRank orders RA router preferences (RFC 4191): low < medium < high;
// a reserved value counts as medium, as the kernel does.
func prefRank(p uint8) int {
	switch p {
	case rtnl.PrefHigh:
		return 1
	case rtnl.PrefLow:
		return -1
	}
	return 0
}

func linkOf(l rtnl.Link) linkInfo {
	return linkInfo{name: l.Name, up: l.Up(), carrier: l.Carrier()}
}

// defaultOf returns the device route entry for a main-table unicast
// default route (IPv4 or IPv6) that is not ours.
func (m *Monitor) defaultOf(r *rtnl.Route) (defRoute, bool) {
	if (r.Table != 0 && r.Table != unix.RT_TABLE_MAIN) || !r.IsDefault() || int(r.Protocol) == m.opts.OwnProto ||
		(r.Type != 0 && r.Type != unix.RTN_UNICAST) {
		return defRoute{}, false
	}
	return defRoute{v6: r.Family == unix.AF_INET6, gw: r.Gw.Unmap(), metric: r.Priority}, true
}

// Monitor watches netlink; create with New, run with Run.
type Monitor struct {
	opts Options
	// arm restarts the carrier poll's window (a link message was seen).
	arm chan struct{}
	// polls counts carrier poll rounds (tests: an idle monitor makes none).
	polls atomic.Uint64
	v     *view
	last  map[string]uplink.Device
	// devices are the names reported: Options.Devices, then each list from DeviceChanges
	// (written by the pump, read by the carrier poll too).
	devices atomic.Pointer[[]string]
	// routesStale says the kernel may have removed routes silently.
	routesStale bool
}

// New returns a monitor; nothing happens until Run.
func New(opts Options) *Monitor {
	if opts.RcvBuf == 0 {
		opts.RcvBuf = 1 << 20
	}
	if opts.Debugf == nil {
		opts.Debugf = func(string, ...any) {}
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.CarrierWindow <= 0 {
		opts.CarrierWindow = 1500 * time.Millisecond
	}
	m := &Monitor{opts: opts, arm: make(chan struct{}, 1)}
	devs := slices.Clone(opts.Devices)
	m.devices.Store(&devs)
	return m
}

// watched returns the names of the devices reported now.
func (m *Monitor) watched() []string { return *m.devices.Load() }

// subscription is one set of netlink subscriptions, merged into one
// channel; an error value on it means the kernel dropped messages or a
// socket failed.
type subscription struct {
	done   chan struct{}
	events chan any
}

type ruleChanged struct{}

// carrierLost is a device the carrier poll found without carrier.
type carrierLost struct{ name string }

var errOverflow = errors.New("netlink subscription lost (overflow or socket error)")

// forward copies a library channel into events until it closes, then
// reports the loss (unless we are shutting down).
func forward[T any](s *subscription, ch <-chan T) {
	for u := range ch {
		select {
		case s.events <- u:
		case <-s.done:
		}
	}
	select {
	case s.events <- errOverflow:
	case <-s.done:
	}
}

func (m *Monitor) subscribe() (*subscription, error) {
	s := &subscription{done: make(chan struct{}), events: make(chan any, 256)}
	ns := m.nsHandle()
	// Links, addresses and routes share a socket: a loss of any of
	// their messages calls for a resync, which ends the subscription.
	sub, err := rtnl.Subscribe(ns, rtnl.GroupLink|rtnl.GroupAddr|rtnl.GroupRoute|rtnl.GroupAddr6|rtnl.GroupRoute6, m.opts.RcvBuf)
	if err != nil {
		return nil, fmt.Errorf("subscribe to links, addresses and routes: %w", err)
	}
	// A rule message only tells us to re-check ours, so a loss of some
	// is one more such message: rules have a socket of their own.
	rs, err := rtnl.Subscribe(ns, rtnl.GroupRule|rtnl.GroupRule6, 0)
	if err != nil {
		sub.Close()
		return nil, fmt.Errorf("subscribe to rules: %w", err)
	}
	go func() {
		<-s.done
		sub.Close()
		rs.Close()
	}()
	updates := make(chan any, 64)
	go func() {
		defer close(updates)
		for {
			msgs, err := sub.Receive()
			if err != nil {
				select {
				case <-s.done: // closing the socket makes the reader fail: expected
				default:
					m.opts.Logf("netmon: %v", err)
				}
				return
			}
			for _, msg := range msgs {
				u, err := rtnl.Parse(msg)
				if err != nil {
					m.opts.Logf("netmon: %v", err)
					return
				}
				if u == nil {
					continue
				}
				select {
				case updates <- u:
				case <-s.done:
					return
				}
			}
		}
	}()
	go forward(s, updates)
	rules := make(chan ruleChanged, 1)
	go forward(s, rules)
	if m.opts.CarrierPoll > 0 {
		go m.pollCarrier(s)
	}
	go func() {
		defer close(rules)
		for {
			_, err := rs.Receive()
			if err != nil && !errors.Is(err, unix.ENOBUFS) {
				return
			}
			// A message or an overflow: rules may have changed.
			select {
			case rules <- ruleChanged{}:
			default:
			}
		}
	}()
	return s, nil
}

// pollCarrier reads the watched devices' carrier every CarrierPoll while
// a window opened by a link message (or the start) lasts, and passes on
// each loss it sees (a regained carrier comes by event soon enough). It
// asks with ethtool's GLINK ioctl, which reads the carrier bit with no
// message to build or parse; a device whose driver lacks it is read over
// netlink instead.
func (m *Monitor) pollCarrier(s *subscription) {
	var fd int
	err := inns.Do(m.nsHandle(), func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		m.opts.Logf("netmon: carrier poll: %v", err)
		return
	}
	defer unix.Close(fd)
	var h *rtnl.Conn // opened on first need
	defer func() {
		if h != nil {
			h.Close()
		}
	}()
	last := map[string]bool{}
	// The window opens at start: linkwatch may have run just before.
	until := time.Now().Add(m.opts.CarrierWindow)
	t := time.NewTimer(m.opts.CarrierPoll)
	defer t.Stop()
	polling := true
	for {
		select {
		case <-s.done:
			return
		case <-m.arm:
			until = time.Now().Add(m.opts.CarrierWindow)
			if !polling {
				polling = true
				t.Reset(m.opts.CarrierPoll)
			}
			continue
		case <-t.C:
		}
		if polling = time.Now().Before(until); polling {
			t.Reset(m.opts.CarrierPoll)
		}
		m.polls.Add(1)
		for _, name := range m.watched() {
			c, err := ethtoolLink(fd, name)
			if errors.Is(err, unix.EOPNOTSUPP) {
				if h == nil {
					if h, err = m.handle(); err != nil {
						h = nil
						continue
					}
				}
				l, lerr := h.LinkByName(name)
				c, err = lerr == nil && l.Carrier(), lerr
			}
			if err != nil {
				delete(last, name) // absent: netlink events tell
				continue
			}
			was, known := last[name]
			last[name] = c
			// A loss: carrier gone since the last round, or gone at
			// the first round of a window (the view may not know yet;
			// telling it again changes nothing).
			if c || (known && !was) {
				continue
			}
			select {
			case s.events <- carrierLost{name}:
			case <-s.done:
				return
			}
		}
		if !polling {
			clear(last) // the next window starts afresh
		}
	}
}

// ethtoolLink reads a device's carrier (ETHTOOL_GLINK).
func ethtoolLink(fd int, name string) (bool, error) {
	if len(name) >= unix.IFNAMSIZ {
		return false, unix.EINVAL
	}
	v := struct{ cmd, data uint32 }{cmd: unix.ETHTOOL_GLINK}
	var req struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24]byte // at least sizeof(struct ifreq) in all
	}
	copy(req.name[:], name)
	req.data = unsafe.Pointer(&v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req)))
	runtime.KeepAlive(&v)
	if errno != 0 {
		return false, errno
	}
	return v.data != 0, nil
}

func (m *Monitor) nsHandle() netns.NsHandle {
	if m.opts.Namespace != nil {
		return *m.opts.Namespace
	}
	return netns.None()
}

// close stops the subscription: its sockets close and its readers exit.
func (s *subscription) close() { close(s.done) }

func (m *Monitor) handle() (*rtnl.Conn, error) {
	return rtnl.Dial(unix.NETLINK_ROUTE, m.nsHandle())
}

// dump rebuilds the view from the kernel.
func (m *Monitor) dump() (*view, error) {
	h, err := m.handle()
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	defer h.Close()
	v := newView()
	links, err := h.Links()
	if err != nil {
		return nil, fmt.Errorf("dump links: %w", err)
	}
	for _, l := range links {
		v.links[l.Index] = linkOf(l)
	}
	addrs, err := h.Addrs()
	if err != nil {
		return nil, fmt.Errorf("dump addresses: %w", err)
	}
	for _, a := range addrs {
		if a.Usable() || a.Deprecated() {
			v.addAddr(a.Index, a.Prefix, a.Usable())
		}
	}
	if err := m.dumpRoutes(h, v); err != nil {
		return nil, err
	}
	return v, nil
}

// dumpRoutes refreshes the default routes of the view. The kernel removes
// routes silently (no RTM_DELROUTE) when a device goes down or loses the
// address their gateway depended on, so those events call for a re-dump.
func (m *Monitor) dumpRoutes(h *rtnl.Conn, v *view) error {
	routes, err := h.Routes(unix.AF_UNSPEC)
	if err != nil {
		return fmt.Errorf("dump routes: %w", err)
	}
	v.routes = map[int]map[defRoute]routeInfo{}
	now := time.Now()
	for i := range routes {
		if d, ok := m.defaultOf(&routes[i]); ok {
			v.addRoute(routes[i].LinkIndex, d, infoOf(&routes[i], now))
		}
	}
	return nil
}

func (m *Monitor) redumpRoutes() error {
	h, err := m.handle()
	if err != nil {
		return fmt.Errorf("open netlink handle: %w", err)
	}
	defer h.Close()
	return m.dumpRoutes(h, m.v)
}

func (v *view) addAddr(idx int, p netip.Prefix, usable bool) {
	if v.addrs[idx] == nil {
		v.addrs[idx] = map[netip.Prefix]bool{}
	}
	v.addrs[idx][p] = usable
}

func (v *view) addRoute(idx int, r defRoute, info routeInfo) {
	if v.routes[idx] == nil {
		v.routes[idx] = map[defRoute]routeInfo{}
	}
	v.routes[idx][r] = info
}

// infoOf is r's preference and lifetime as read at now. An RA's route
// that expired is kept by the kernel, unused, until its garbage collection
// runs (up to 30 s later): it is no default route. The kernel says nothing
// when a route expires, nor when a new RA renews its lifetime, so the
// routes are read again when one is due to expire, and every
// recheckExpired while an expired one is kept (nextExpiry).
func infoOf(r *rtnl.Route, now time.Time) routeInfo {
	info := routeInfo{pref: prefRank(r.Pref)}
	switch {
	case r.Expires < 0:
		info.expired, info.until = true, now.Add(recheckExpired)
	case r.Expires > 0:
		info.until = now.Add(r.Expires)
	}
	return info
}

// nextExpiry is when the routes are to be read again (a route expires,
// or one expired may have been renewed), zero if never.
func (v *view) nextExpiry() time.Time {
	var next time.Time
	for _, rs := range v.routes {
		for _, info := range rs {
			if !info.until.IsZero() && (next.IsZero() || info.until.Before(next)) {
				next = info.until
			}
		}
	}
	return next
}

// Run watches until ctx ends. It returns an error only if it cannot
// subscribe at all; later failures are retried (with a resync).
func (m *Monitor) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	first := true
	for {
		s, err := m.subscribe()
		if err == nil {
			var v *view
			v, err = m.dump()
			if err == nil {
				m.v = v
				m.emit(true, false, false)
				first = false
				backoff = 100 * time.Millisecond
				err = m.pump(ctx, s)
			}
			s.close()
		}
		if ctx.Err() != nil {
			return nil
		}
		if first {
			return err
		}
		m.opts.Logf("netmon: resubscribing after: %v", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// pump applies messages, coalescing what is already queued into one update.
func (m *Monitor) pump(ctx context.Context, s *subscription) error {
	expired := time.NewTimer(time.Hour)
	defer expired.Stop()
	for {
		// Wake when a default route's lifetime runs out (an RA's) to read
		// the routes again: the kernel says nothing when it expires, nor
		// when a new RA renews it.
		expired.Stop()
		if next := m.v.nextExpiry(); !next.IsZero() {
			// A little after it, so that the kernel says expired (it
			// rounds a lifetime within a tick of its end to none).
			expired.Reset(max(time.Until(next), 0) + 100*time.Millisecond)
		}
		var c change
		// Block for the first message ...
		select {
		case <-ctx.Done():
			return nil
		case <-expired.C:
			m.routesStale = true
		case ev := <-s.events:
			if err := m.apply(ev, &c); err != nil {
				return err
			}
		case devs := <-m.opts.DeviceChanges: // nil channel: never
			devs = slices.Clone(devs)
			m.devices.Store(&devs)
		}
		// ... then take everything already queued, without waiting: a
		// burst becomes one update, and a lone change goes out at once.
	drain:
		for range 4096 {
			select {
			case ev := <-s.events:
				if err := m.apply(ev, &c); err != nil {
					return err
				}
			default:
				break drain
			}
		}
		if m.routesStale {
			m.routesStale = false
			if err := m.redumpRoutes(); err != nil {
				return err
			}
		}
		m.emit(false, c.own, c.rules)
	}
}

// change accumulates the flags of one coalesced update.
type change struct{ own, rules bool }

func (m *Monitor) apply(ev any, c *change) error {
	switch u := ev.(type) {
	case rtnl.LinkUpdate:
		m.applyLink(u)
		select { // linkwatch may be batching now: watch the carrier
		case m.arm <- struct{}{}:
		default:
		}
	case rtnl.AddrUpdate:
		m.applyAddr(u)
	case rtnl.RouteUpdate:
		c.own = m.applyRoute(u) || c.own
	case ruleChanged:
		c.rules = true
	case carrierLost:
		for idx, li := range m.v.links {
			if li.name == u.name && li.carrier {
				li.carrier = false
				m.setLink(idx, li)
			}
		}
	case error:
		return u
	}
	return nil
}

func (m *Monitor) applyLink(u rtnl.LinkUpdate) {
	idx := u.Index
	if u.Deleted {
		delete(m.v.links, idx)
		delete(m.v.addrs, idx)
		delete(m.v.routes, idx)
		return
	}
	m.setLink(idx, linkOf(u.Link))
}

func (m *Monitor) setLink(idx int, li linkInfo) {
	if !li.up {
		m.routesStale = true // down flushes routes silently
	}
	m.v.links[idx] = li
}

func (m *Monitor) applyAddr(u rtnl.AddrUpdate) {
	if u.Scope != unix.RT_SCOPE_UNIVERSE {
		return
	}
	if !u.Deleted {
		// An IPv6 address is announced again as its flags change: usable
		// once DAD passed, deprecated once its preferred lifetime is over,
		// unusable once DAD failed.
		if u.Usable() || u.Deprecated() {
			m.v.addAddr(u.Index, u.Prefix, u.Usable())
		} else {
			delete(m.v.addrs[u.Index], u.Prefix)
		}
		return
	}
	delete(m.v.addrs[u.Index], u.Prefix)
	m.routesStale = true
}

// applyRoute records default-route changes and reports whether the route
// was one of ours.
func (m *Monitor) applyRoute(u rtnl.RouteUpdate) bool {
	if int(u.Protocol) == m.opts.OwnProto {
		return true
	}
	d, ok := m.defaultOf(&u.Route)
	if !ok {
		return false
	}
	if u.Deleted {
		delete(m.v.routes[u.LinkIndex], d)
		return false
	}
	m.v.addRoute(u.LinkIndex, d, infoOf(&u.Route, time.Now()))
	return false
}

func (m *Monitor) emit(resync, own, rules bool) {
	u := Update{Devices: map[string]uplink.Device{}, Resync: resync, OwnRoutesChanged: own, RulesChanged: rules}
	next := map[string]uplink.Device{}
	for _, name := range m.watched() {
		d := m.v.device(name)
		next[name] = d
		if old, ok := m.last[name]; resync || !ok || !equalDevice(old, d) {
			u.Devices[name] = d
		}
	}
	m.last = next
	if len(u.Devices) == 0 && !resync && !own && !rules {
		return
	}
	if resync {
		m.opts.Debugf("netmon: full dump of %d links", len(m.v.links))
	}
	m.opts.Notify(u)
}

func equalDevice(a, b uplink.Device) bool {
	return a.Present == b.Present && a.AdminUp == b.AdminUp && a.Carrier == b.Carrier &&
		a.HasDefault == b.HasDefault && a.Gateway == b.Gateway && slices.Equal(a.Addrs, b.Addrs) &&
		slices.Equal(a.Deprecated, b.Deprecated) &&
		a.HasDefault6 == b.HasDefault6 && a.Gateway6 == b.Gateway6 &&
		slices.Equal(a.Routers, b.Routers) && slices.Equal(a.Routers6, b.Routers6)
}

// CarrierPolls returns how many carrier poll rounds ran.
func (m *Monitor) CarrierPolls() uint64 { return m.polls.Load() }

// Devices returns the last delivered snapshot of every watched device
// (for tests and status); only safe from Notify or after Run returned.
func (m *Monitor) Devices() map[string]uplink.Device { return maps.Clone(m.last) }
