package daemon

// The bus component: connmgr on ubus. It publishes the `connmgr` object, turns every notice
// (d.announce) into a ubus event and a notification to the object's subscribers, and keeps
// netifd's view of the configured uplinks (bus_netifd.go). Without ubusd the daemon runs on
// and the client keeps retrying in the background; the connection's comings and goings are
// logged once each, never per attempt.
//
// The methods allow, disallow and firewall_restore (fwcfg.sh, the firewall include) are the
// firewall component's d.FirewallAllow, FirewallDisallow and FirewallRestore; they answer
// NOT_SUPPORTED while the firewall mode is off. Other components take part by implementing
// small interfaces; the bus finds them in d.components and calls them on the loop goroutine:
//
//   - netifdSink is told when netifd's view of an uplink changes (DNS servers, gateways);
//   - preferenceSink (notices.go) acts on set_attribute 65008 and switch.
//
// An error becomes the reply's status: a ubus.Status (also wrapped) keeps its code, anything
// else is UNKNOWN_ERROR; its text goes back as the reply's {"error": "..."}.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/afero/af-conn/internal/ubus"
)

// ObjectName is the ubus object connmgr publishes.
const ObjectName = "connmgr"

// callTimeout bounds how long a method call waits for the loop; the stock ubus CLI waits 30 s.
const callTimeout = 10 * time.Second

// bus is the ubus component. Fields marked (loop) are read and written only on the loop
// goroutine; the rest are guarded by mu or set before start returns.
type bus struct {
	d      *Daemon
	client *ubus.Client
	obj    *ubus.Object

	cancel context.CancelFunc
	done   chan struct{} // closed when the client has stopped
	ctx    context.Context

	// out sends events and notifications in order, off the loop; work queries netifd.
	out, work *ubus.Queue
	// asking holds the networks whose netifd query is queued and not started (under mu): a
	// flapping link's address changes queue one query per network, not one per change.
	asking map[string]bool
	outMu  sync.Mutex
	outN   int // notices queued on out and not yet sent

	mu       sync.Mutex
	uplinks  []string            // configured uplink networks, for the netifd listener
	devices  map[string][]string // their configured devices
	aliases  map[string]string   // networks on an uplink's device (netifdAliases)
	conn     *ubus.Conn          // the connection up now, nil while there is none
	connects uint64

	refusals  ubus.LogLimiter            // failed calls logged
	netifd    map[string]NetifdInterface // (loop) by network name
	preferred int                        // (loop) last preference announced
}

// maxPendingOut bounds the events waiting for a slow ubusd; beyond it new ones are dropped
// (and logged) rather than piling up in memory.
const maxPendingOut = 256

func newBus(d *Daemon) *bus {
	b := &bus{d: d, netifd: map[string]NetifdInterface{}, preferred: d.preferred}
	b.obj = &ubus.Object{Name: ObjectName, Methods: b.methods()}
	b.setUplinks(d.cur)
	return b
}

func (b *bus) start(ctx context.Context) error {
	b.ctx, b.cancel = context.WithCancel(ctx)
	b.done = make(chan struct{})
	b.out, b.work = ubus.NewQueue(), ubus.NewQueue()
	b.client = ubus.NewClient(b.d.opts.UbusSocket)
	b.client.Logf = func(format string, args ...any) { b.d.log.Info(fmt.Sprintf(format, args...)) }
	if err := b.client.AddObject(b.ctx, b.obj); err != nil {
		return fmt.Errorf("ubus object %s: %w", ObjectName, err)
	}
	if err := b.client.Listen(b.ctx, b.onNetifdEvent, netifdEventName); err != nil {
		return fmt.Errorf("ubus listen %s: %w", netifdEventName, err)
	}
	b.client.OnConnect(b.onConnect)
	go func() {
		defer close(b.done)
		b.client.Run(b.ctx)
	}()
	return nil
}

// onConnect runs on the client's goroutine after each (re)connection: it records the
// connection for status and asks netifd again about every uplink (events were missed while
// ubusd was away).
func (b *bus) onConnect(_ context.Context, conn *ubus.Conn) {
	b.mu.Lock()
	b.conn = conn
	b.connects++
	b.mu.Unlock()
	go func() {
		<-conn.Done()
		b.mu.Lock()
		if b.conn == conn { // not already replaced by the next connection
			b.conn = nil
		}
		b.mu.Unlock()
	}()
	b.refreshNetifd(b.uplinkNames()...)
	if b.work != nil {
		b.work.Push(b.queryNetifdDynamic)
	}
}

func (b *bus) reload(old, cur *Loaded) {
	b.setUplinks(cur)
	// Forget networks that are no longer uplinks, ask about new ones.
	var fresh []string
	for _, u := range cur.Config.Uplinks {
		if old.Config.Uplink(u.Name) == nil {
			fresh = append(fresh, u.Name)
		}
	}
	var names []string
	for _, u := range cur.Config.Uplinks {
		names = append(names, u.Name)
	}
	for name := range b.netifd {
		if b.d.uplinkOf(name, names) == "" {
			delete(b.netifd, name)
		}
	}
	b.refreshNetifd(fresh...)
}

func (b *bus) stop() {
	if b.cancel == nil {
		return
	}
	b.cancel()
	<-b.done // the connection is closed: ubusd removes the object
	b.out.Close()
	b.work.Close()
}

func (b *bus) fillStatus(s *Status) {
	b.mu.Lock()
	u := &UbusStatus{Connected: b.conn != nil, Socket: b.d.opts.UbusSocket}
	if b.connects > 1 {
		u.Reconnects = b.connects - 1
	}
	b.mu.Unlock()
	for _, u2 := range b.d.cur.Config.Uplinks {
		if n, ok := b.netifd[u2.Name]; ok {
			u.Netifd = append(u.Netifd, n)
		}
	}
	s.Ubus = u
}

func (b *bus) setUplinks(l *Loaded) {
	var names []string
	for _, u := range l.Config.Uplinks {
		names = append(names, u.Name)
	}
	devices := map[string][]string{}
	for _, u := range l.Config.Uplinks {
		devices[u.Name] = []string{u.Device}
	}
	b.mu.Lock()
	b.uplinks, b.devices = names, devices
	b.mu.Unlock()
}

func (b *bus) uplinkNames() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.uplinks)
}

// isUplink tells whether netifd's network name is an uplink or one of its dynamic
// interfaces (modemnet_4, modemnet_6, a 464XLAT modemnet_6_4).
func (b *bus) isUplink(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return uplinkOf(name, b.uplinks, b.aliases) != ""
}

// post hands ev to the loop from a bus goroutine, giving up when the bus stops (the loop may
// already be gone then).
func (b *bus) post(ev event) bool {
	select {
	case b.d.events <- ev:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// statusError is an error with the ubus status it answers with.
type statusError struct {
	st    ubus.Status
	msg   string
	cause error // what it stands for, if anything (errors.Is finds it)
}

func (e *statusError) Error() string   { return e.msg }
func (e *statusError) Unwrap() []error { return []error{e.st, e.cause} }

func errorf(st ubus.Status, format string, args ...any) error {
	return &statusError{st: st, msg: fmt.Sprintf(format, args...)}
}

// methodFunc is a method's body: the call's arguments in, the reply out.
type methodFunc func(ctx context.Context, args ubus.Table) (ubus.Table, error)

// handler wraps a method body: it bounds the call's time and sends an error's text back as
// {"error": "..."} along with its status, so `ubus call` shows why.
func (b *bus) handler(name string, f methodFunc) ubus.MethodHandler {
	return func(ctx context.Context, req *ubus.Request) (ubus.Table, error) {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		out, err := f(ctx, req.Args)
		if err != nil {
			// Anyone allowed to call may fail calls in a loop: the log takes a few a window.
			if ok, dropped := b.refusals.Allow(b.d.clock.Now()); ok {
				b.d.log.Info("ubus call refused", "method", name, "status", ubus.StatusOf(err).Error(), "err", err, "more_refused_before", dropped)
			}
			return ubus.Table{{Name: "error", Value: err.Error()}}, err
		}
		return out, nil
	}
}

// onLoop runs f on the loop goroutine and returns its reply.
func (b *bus) onLoop(ctx context.Context, f func() (ubus.Table, error)) (ubus.Table, error) {
	var out ubus.Table
	var err error
	if e := b.d.Do(ctx, func() { out, err = f() }); e != nil {
		return nil, errorf(ubus.StatusTimeout, "daemon did not answer in time: %v", e)
	}
	return out, err
}

// methods is the connmgr object's method table; `ubus -v list connmgr` shows these
// argument types.
func (b *bus) methods() []ubus.Method {
	m := func(name string, f methodFunc, args ...ubus.Arg) ubus.Method {
		return ubus.Method{Name: name, Args: args, Handler: b.handler(name, f)}
	}
	str := func(n string) ubus.Arg { return ubus.Arg{Name: n, Type: ubus.TypeString} }
	num := func(n string) ubus.Arg { return ubus.Arg{Name: n, Type: ubus.TypeInt32} }
	flag := func(n string) ubus.Arg { return ubus.Arg{Name: n, Type: ubus.TypeBool} }
	return []ubus.Method{
		m("status", b.callStatus),
		m("get_attribute", b.callGetAttribute, num("id")),
		m("set_attribute", b.callSetAttribute, num("id"), num("value")),
		m("reload", b.callReload),
		m("switch", b.callSwitch, str("interface")),
		m("allow", b.callAllow, str("address"), str("comment"), flag("forward")),
		m("disallow", b.callDisallow, str("address"), flag("forward")),
		m("firewall_restore", b.callFirewallRestore),
		m("notify", b.callNotify, str("interface"), str("action")),
	}
}

func (b *bus) callStatus(ctx context.Context, _ ubus.Table) (ubus.Table, error) {
	return b.onLoop(ctx, func() (ubus.Table, error) { return StatusTable(b.d.Status()) })
}

// StatusTable is Status as the blobmsg table `ubus call connmgr status` answers: what the
// JSON encoding of Status reads back as the way `ubus call` reads JSON (ubus.Marshal, without
// the JSON), so ubus and `connmgr status --json` show the same document.
func StatusTable(st Status) (ubus.Table, error) {
	if st.Uplinks == nil {
		st.Uplinks = []UplinkStatus{} // [] rather than null: scripts iterate it
	}
	t, err := ubus.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode status: %w", err)
	}
	return t, nil
}

func (b *bus) callGetAttribute(ctx context.Context, args ubus.Table) (ubus.Table, error) {
	a, err := attributeArg(args)
	if err != nil {
		return nil, err
	}
	return b.onLoop(ctx, func() (ubus.Table, error) {
		st := b.d.Status()
		return a.reply(a.get(&st)), nil
	})
}

func (b *bus) callSetAttribute(ctx context.Context, args ubus.Table) (ubus.Table, error) {
	a, err := attributeArg(args)
	if err != nil {
		return nil, err
	}
	v, err := intArg(args, "value")
	if err != nil {
		return nil, err
	}
	return b.onLoop(ctx, func() (ubus.Table, error) { return a.reply(v), a.set(b.d, v) })
}

// attributeArg is the attribute named by the argument "id".
func attributeArg(args ubus.Table) (*attribute, error) {
	id, err := intArg(args, "id")
	if err != nil {
		return nil, err
	}
	return findAttribute(id)
}

// callReload re-reads the configuration; a bad file answers INVALID_ARGUMENT with the error
// (file and line) and the running configuration stays.
func (b *bus) callReload(ctx context.Context, _ ubus.Table) (ubus.Table, error) {
	done := make(chan error, 1) // buffered: the loop never waits for a caller that gave up
	select {
	case b.d.events <- reloadEvent{done: done}:
	case <-ctx.Done():
		return nil, errorf(ubus.StatusTimeout, "daemon did not take the reload in time")
	}
	select {
	case err := <-done:
		if err != nil {
			return nil, &statusError{ubus.StatusInvalidArgument, "reload failed, running configuration kept: " + err.Error(), err}
		}
		return nil, nil
	case <-ctx.Done():
		return nil, errorf(ubus.StatusTimeout, "reload did not finish in time")
	}
}

// callSwitch is the seed's switch_route.sh: "use this uplink". It sets the preferred network
// type to the type of the uplink named by its device (eth0) or network (ethnet), exactly as
// set_attribute 65008 would: the selector moves the default route there as soon as that
// uplink is proven, and keeps it there while it stays proven.
func (b *bus) callSwitch(ctx context.Context, args ubus.Table) (ubus.Table, error) {
	name, err := strArg(args, "interface")
	if err != nil {
		return nil, err
	}
	return b.onLoop(ctx, func() (ubus.Table, error) {
		// The device as netifd names it now (3g-modemnet) or as configured.
		for _, u := range b.d.withL3Devices(b.d.cur.Config).Uplinks {
			if u.Name != name && (u.Device != name || name == "") {
				continue
			}
			if err := b.d.SetPreferredNetworkType(int(u.Kind)); err != nil {
				return nil, &statusError{ubus.StatusInvalidArgument, err.Error(), err}
			}
			return ubus.Table{{Name: "network", Value: u.Name}, {Name: "device", Value: u.Device},
				{Name: "preferred_network_type", Value: int32(u.Kind)}}, nil
		}
		return nil, errorf(ubus.StatusNotFound, "no uplink with device or network %q", name)
	})
}

// onFirewall runs one of the firewall's methods on the loop; with the firewall mode off it
// answers NOT_SUPPORTED.
func (b *bus) onFirewall(ctx context.Context, f func() error) (ubus.Table, error) {
	return b.onLoop(ctx, func() (ubus.Table, error) {
		err := f()
		if errors.Is(err, ErrFirewallOff) {
			return nil, &statusError{ubus.StatusNotSupported, err.Error() + " (-d or option firewall '0')", err}
		}
		return nil, err
	})
}

func (b *bus) callAllow(ctx context.Context, args ubus.Table) (ubus.Table, error) {
	addr, err := pinholeArg(args, "address")
	if err != nil {
		return nil, err
	}
	comment, _ := args.String("comment")
	forward, err := boolArg(args, "forward")
	if err != nil {
		return nil, err
	}
	return b.onFirewall(ctx, func() error { return b.d.FirewallAllow(addr, comment, forward) })
}

func (b *bus) callDisallow(ctx context.Context, args ubus.Table) (ubus.Table, error) {
	addr, err := addrArg(args, "address")
	if err != nil {
		return nil, err
	}
	forward, err := boolArg(args, "forward")
	if err != nil {
		return nil, err
	}
	return b.onFirewall(ctx, func() error { return b.d.FirewallDisallow(addr, forward) })
}

// callFirewallRestore puts connmgr's rules back after a firewall reload. With the firewall
// mode off there is nothing to put back, which is success (the firewall include calls this
// after every reload, whatever the mode).
func (b *bus) callFirewallRestore(ctx context.Context, _ ubus.Table) (ubus.Table, error) {
	out, err := b.onFirewall(ctx, b.d.FirewallRestore)
	if errors.Is(err, ErrFirewallOff) {
		return ubus.Table{{Name: "firewall", Value: "disabled"}}, nil
	}
	return out, err
}

// callNotify is the hotplug hook's hint that netifd changed a network (ifup, ifdown,
// ifupdate, ...): the bus asks netifd about it again when it is an uplink. The uplink monitor
// follows the kernel over netlink, which tells it the same change first, so the hint feeds
// only netifd's view (the DNS servers the probes use); the action is not needed for that.
func (b *bus) callNotify(_ context.Context, args ubus.Table) (ubus.Table, error) {
	network, err := strArg(args, "interface")
	if err != nil {
		return nil, err
	}
	if _, err := strArg(args, "action"); err != nil {
		return nil, err
	}
	if b.isUplink(network) {
		b.refreshNetifd(network)
	}
	return nil, nil
}

// Argument readers: a missing or mistyped argument is INVALID_ARGUMENT naming it.

func intArg(args ubus.Table, name string) (int64, error) {
	v, ok := args.Get(name)
	if !ok {
		return 0, errorf(ubus.StatusInvalidArgument, "missing argument %q", name)
	}
	n, ok := ubus.AsInt(v)
	if !ok {
		return 0, errorf(ubus.StatusInvalidArgument, "argument %q must be an integer", name)
	}
	return n, nil
}

func strArg(args ubus.Table, name string) (string, error) {
	v, ok := args.Get(name)
	if !ok {
		return "", errorf(ubus.StatusInvalidArgument, "missing argument %q", name)
	}
	s, ok := v.(string)
	if !ok || s == "" {
		return "", errorf(ubus.StatusInvalidArgument, "argument %q must be a non-empty string", name)
	}
	return s, nil
}

// boolArg reads an optional boolean (false when absent).
func boolArg(args ubus.Table, name string) (bool, error) {
	if _, ok := args.Get(name); !ok {
		return false, nil
	}
	v, ok := args.Bool(name)
	if !ok {
		return false, errorf(ubus.StatusInvalidArgument, "argument %q must be a boolean", name)
	}
	return v, nil
}

// pinholeArg reads an address to open in the lock-down: one host of the cloud. Loopback,
// multicast, the broadcast address, the unspecified address and scoped (zoned) addresses
// are refused: none is a cloud server, and opening one would open the hub to its own
// services, to a whole link or to nothing meaningful.
func pinholeArg(args ubus.Table, name string) (netip.Addr, error) {
	s, _ := args.String(name)
	if _, zone, ok := strings.Cut(s, "%"); ok && zone != "" {
		return netip.Addr{}, errorf(ubus.StatusInvalidArgument, "argument %q: %q is a scoped address, not a cloud server's", name, s)
	}
	a, err := addrArg(args, name)
	if err != nil {
		return a, err
	}
	var what string
	switch {
	case a.IsUnspecified():
		what = "the unspecified address"
	case a.IsLoopback():
		what = "a loopback address"
	case a.IsMulticast():
		what = "a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		what = "the broadcast address"
	default:
		return a, nil
	}
	return netip.Addr{}, errorf(ubus.StatusInvalidArgument, "argument %q: %q is %s, not a cloud server's", name, s, what)
}

func addrArg(args ubus.Table, name string) (netip.Addr, error) {
	s, err := strArg(args, name)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errorf(ubus.StatusInvalidArgument, "argument %q: %q is not an IP address", name, s)
	}
	return a.Unmap(), nil
}
