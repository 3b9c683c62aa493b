// Package daemon owns connmgr's state and runs its single event loop. Every input (netlink
// changes, captured traffic, probe results, ubus calls, timers, signals) arrives as an event
// posted by a pump goroutine; only the loop goroutine reads or writes state. Each concern
// (uplinks and routes, firewall and DNS, ubus) is a component in a file of its own that the loop
// starts, reloads and stops, and that reaches the outside world only through small interfaces
// with real implementations and test fakes.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/whitelist"
)

// Version is set by main from the build.
var Version = "dev"

// Options are what the command line decides.
type Options struct {
	UCIDir        string // -c
	WhitelistPath string // -w
	UbusSocket    string // -s
	NoFirewall    bool   // -d: firewall mode off whatever the config says
	// UsageLedger is the usage ledger's file (main: UsageLedgerPath()); "" keeps it in memory.
	UsageLedger string

	Logger *logline.Logger
	// Level is the logger's level; the daemon sets it from the config's log_level.
	Level *logline.LevelVar
	// Clock is real time unless a test injects its own.
	Clock Clock
}

// event is something that happened, applied to the daemon's state on the loop goroutine.
type event interface {
	apply(d *Daemon)
}

// component is one concern of the daemon. All methods run on the loop goroutine.
type component interface {
	// start launches the component's pumps; ctx ends when the daemon stops.
	start(ctx context.Context) error
	// reload applies a new configuration that has already been validated.
	reload(old, cur *Loaded)
	// stop undoes what the component changed outside the process (routes, firewall).
	stop()
	// fillStatus adds the component's part to a status snapshot.
	fillStatus(s *Status)
}

// Loaded is one consistent configuration: the UCI config and the whitelist read together.
type Loaded struct {
	Config    *config.Config
	Whitelist *whitelist.List // empty, never nil
	// FirewallOn is the effective firewall mode: config option firewall and not -d.
	FirewallOn bool
}

// Daemon is connmgr's state and event loop.
type Daemon struct {
	opts    Options
	log     *logline.Logger
	clock   Clock
	events  chan event
	cur     *Loaded
	started time.Time

	components []component
	counters   Counters
	// preferred is attribute 65008 as last set: -1 automatic, else the network type to use
	// whenever it is proven.
	preferred int
	uplinks   *uplinks
	// l3 is, per uplink network, the layer-3 device netifd last reported (see devices.go).
	l3 map[string]string
	// clat is, per 464XLAT network of an uplink, its clat device (see devices.go).
	clat map[string]string
	// aliases are the networks netifd runs on an uplink's device under their own name
	// (wan6 on @wan): network -> uplink (netifdAliases, from netifd's dump).
	aliases map[string]string
}

// New reads the configuration and prepares the daemon. A configuration error is returned as
// it is, naming the file and line, for main to print before exiting non-zero.
func New(opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = logline.Stderr()
	}
	if opts.Clock == nil {
		opts.Clock = RealClock{}
	}
	d := &Daemon{
		opts:      opts,
		log:       opts.Logger,
		clock:     opts.Clock,
		events:    make(chan event, 256),
		preferred: NetworkNone,
		l3:        map[string]string{},
		clat:      map[string]string{},
	}
	cur, err := d.load()
	if err != nil {
		return nil, err
	}
	d.cur = cur
	d.applyLogLevel()
	d.components = d.buildComponents()
	return d, nil
}

// buildComponents lists the daemon's concerns in start order; stop runs in reverse.
func (d *Daemon) buildComponents() []component {
	var cs []component
	// The bus first: it is up before the others announce anything and stops last.
	// An empty socket path (tests) means no ubus.
	if d.opts.UbusSocket != "" {
		cs = append(cs, newBus(d))
	}
	// The DNS gate comes after the firewall: its mode depends on the firewall's queue hook, and
	// it stops (releasing held replies) before the firewall is torn down. The uplink monitor
	// comes last: routes are removed first on the way out.
	d.uplinks = newUplinks(d)
	// Usage after the uplinks: it reads their controller, and adds to their status.
	return append(cs, newFirewallComponent(d), newDNSComponent(d), d.uplinks, newUsage(d))
}

// load reads the UCI configuration and the whitelist. Nothing is applied here, so a bad file
// on reload leaves the running configuration untouched.
func (d *Daemon) load() (*Loaded, error) {
	cfg, err := config.Load(d.opts.UCIDir)
	if err != nil {
		return nil, err
	}
	l := &Loaded{Config: cfg, FirewallOn: cfg.Main.Firewall && !d.opts.NoFirewall}
	if l.FirewallOn {
		wl, err := whitelist.Load(d.opts.WhitelistPath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			d.log.Warn("whitelist missing: only DNS, DHCP, NTP and ICMP echo will pass the firewall", "file", d.opts.WhitelistPath)
			wl, _ = whitelist.Parse(d.opts.WhitelistPath, strings.NewReader(""))
		case err != nil:
			return nil, err
		}
		l.Whitelist = wl
	} else {
		l.Whitelist, _ = whitelist.Parse("", strings.NewReader(""))
	}
	return l, nil
}

// Run runs the event loop until ctx ends, then stops every component. It returns an error only
// when start-up fails, and then leaves what the started components changed in place.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = d.clock.Now()
	d.logConfig("starting")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var started []component
	// Only a stop (ctx ended) undoes what the components changed. A panic unwinds through
	// here too, and must leave the lock-down (and the routes) in place: the hub stays filtered
	// until procd's respawn adopts them, as after SIGKILL (README "What a fault leaves
	// behind"). So must a failed start: it is often the instance procd started after a crash,
	// which has just adopted that lock-down, and procd starts another 5 s later.
	returned, failed := false, false
	defer func() {
		if !returned {
			d.log.Error("connmgr crashed: firewall lock-down, pinholes and routes left in place for the next instance")
			return
		}
		if failed {
			d.log.Error("start failed: firewall lock-down, pinholes and routes left in place for the next instance")
			return
		}
		for i := len(started) - 1; i >= 0; i-- {
			started[i].stop()
		}
		d.log.Info("stopped")
	}()
	for _, c := range d.components {
		if err := c.start(ctx); err != nil {
			returned, failed = true, true
			return fmt.Errorf("start: %w", err)
		}
		started = append(started, c)
	}
	d.startTestHooks(ctx)
	d.log.Info("running", "components", len(started))
	for {
		select {
		case <-ctx.Done():
			returned = true
			return nil
		case ev := <-d.events:
			ev.apply(d)
		}
	}
}

// post hands an event to the loop. It may be called from any goroutine; it blocks while the
// loop's queue is full, which pushes back on a pump that produces faster than the loop applies.
func (d *Daemon) post(ev event) {
	d.events <- ev
}

// Reload asks the loop to re-read the configuration (SIGHUP, ubus reload).
func (d *Daemon) Reload() {
	go d.post(reloadEvent{})
}

type reloadEvent struct{ done chan error }

func (e reloadEvent) apply(d *Daemon) {
	err := d.reload()
	if e.done != nil {
		e.done <- err
	}
}

// reload swaps in a new configuration if it reads cleanly; otherwise the last good one stays.
func (d *Daemon) reload() error {
	next, err := d.load()
	if err != nil {
		d.log.Error("reload failed; keeping the running configuration", "err", err)
		return err
	}
	old := d.cur
	d.cur = next
	d.applyLogLevel()
	for _, c := range d.components {
		c.reload(old, next)
	}
	d.counters.Reloads++
	d.logConfig("reloaded")
	return nil
}

// Do runs f on the loop goroutine and waits for it, so callers outside the loop (ubus methods)
// can read and change state safely.
func (d *Daemon) Do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case d.events <- funcEvent{f: f, done: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type funcEvent struct {
	f    func()
	done chan struct{}
}

func (e funcEvent) apply(*Daemon) {
	e.f()
	close(e.done)
}

// after posts ev once dur has passed.
func (d *Daemon) after(dur time.Duration, ev event) Timer {
	return d.clock.AfterFunc(dur, func() { d.post(ev) })
}

func (d *Daemon) applyLogLevel() {
	if d.opts.Level != nil {
		d.opts.Level.Set(d.cur.Config.Main.LogLevel)
	}
}

// logConfig says what the daemon runs with, so a log alone tells how it was set up.
func (d *Daemon) logConfig(what string) {
	c := d.cur.Config
	d.log.Info(what, "version", Version, "uci_dir", d.opts.UCIDir, "firewall", d.cur.FirewallOn,
		"firewall_backend", c.Main.FirewallBackend, "whitelist", d.opts.WhitelistPath,
		"whitelist_entries", d.cur.Whitelist.Len(), "echo", fmt.Sprintf("%s:%d", c.Main.EchoHost, c.Main.EchoPort),
		"probe", c.Main.Probe, "ubus", d.opts.UbusSocket)
	for _, u := range c.Uplinks {
		d.log.Info("uplink", "network", u.Name, "device", u.Device, "type", u.Kind.String(),
			"priority", u.Priority, "enabled", u.Enabled)
	}
	for _, w := range c.Warnings {
		d.log.Warn("config", "warning", w)
	}
}
