package ubus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// ErrNotConnected is returned by Client methods while there is no
// connection to ubusd.
var ErrNotConnected = fmt.Errorf("ubus not connected: %w", StatusConnectionFailed)

// Default reconnect backoff: the first retry comes quickly, because a
// restarted ubusd is usually back within milliseconds, and the cap keeps an
// object away for at most about half a second after ubusd returns.
const (
	DefaultMinBackoff = 10 * time.Millisecond
	DefaultMaxBackoff = 500 * time.Millisecond
)

// Client keeps one connection to ubusd alive: Run dials, publishes the
// objects, registers the event listeners, runs the OnConnect hooks, and
// when the connection ends (ubusd restarted) does it all again.
type Client struct {
	path string

	// MinBackoff and MaxBackoff bound the wait between connection
	// attempts (doubling from min to max); set them before Run.
	MinBackoff, MaxBackoff time.Duration
	// Logf receives connection state changes (not every failed attempt).
	Logf func(format string, args ...any)

	mu        sync.Mutex
	conn      *Conn
	changed   chan struct{} // closed and replaced when conn changes
	objects   []*Object
	listeners []listener
	hooks     []func(context.Context, *Conn)
}

type listener struct {
	patterns []string
	h        EventHandler
}

// NewClient returns a Client for the ubusd socket at path; call Run.
func NewClient(path string) *Client {
	return &Client{
		path:       path,
		MinBackoff: DefaultMinBackoff,
		MaxBackoff: DefaultMaxBackoff,
		changed:    make(chan struct{}),
	}
}

// Path is the socket path the client connects to.
func (c *Client) Path() string { return c.path }

func (c *Client) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// AddObject publishes obj on every connection from now on (and at once on
// the current one, whose error is returned).
func (c *Client) AddObject(ctx context.Context, obj *Object) error {
	c.mu.Lock()
	c.objects = append(c.objects, obj)
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	_, err := conn.AddObject(ctx, obj)
	return err
}

// Listen registers h for events matching patterns on every connection from
// now on (and at once on the current one).
func (c *Client) Listen(ctx context.Context, h EventHandler, patterns ...string) error {
	c.mu.Lock()
	c.listeners = append(c.listeners, listener{patterns, h})
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	return conn.Listen(ctx, h, patterns...)
}

// OnConnect adds a hook run after each (re)connection, once objects and
// listeners are registered; use it to resynchronise state that was missed
// while ubusd was away. Hooks run on Run's goroutine and should be quick.
func (c *Client) OnConnect(f func(ctx context.Context, conn *Conn)) {
	c.mu.Lock()
	c.hooks = append(c.hooks, f)
	c.mu.Unlock()
}

// Conn returns the current connection, or nil.
func (c *Client) Conn() *Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// WaitConnected waits until a connection is up with everything registered.
func (c *Client) WaitConnected(ctx context.Context) (*Conn, error) {
	for {
		c.mu.Lock()
		conn, ch := c.conn, c.changed
		c.mu.Unlock()
		if conn != nil && conn.Err() == nil {
			return conn, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Client) setConn(conn *Conn) {
	c.mu.Lock()
	c.conn = conn
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Call invokes method on the object named path over the current connection.
func (c *Client) Call(ctx context.Context, path, method string, args Table) (Table, error) {
	conn := c.Conn()
	if conn == nil {
		return nil, ErrNotConnected
	}
	return conn.Call(ctx, path, method, args)
}

// Send broadcasts an event over the current connection.
func (c *Client) Send(ctx context.Context, event string, data Table) error {
	conn := c.Conn()
	if conn == nil {
		return ErrNotConnected
	}
	return conn.Send(ctx, event, data)
}

// Notify notifies the subscribers of obj over the current connection;
// without a connection there is nobody to notify and nothing happens.
func (c *Client) Notify(obj *Object, typ string, data Table) error {
	conn := c.Conn()
	if conn == nil {
		return nil
	}
	return conn.Notify(obj, typ, data)
}

// Run keeps the connection up until ctx ends. It returns ctx's error.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.MinBackoff
	var lastErr error
	for {
		conn, err := c.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if lastErr == nil || lastErr.Error() != err.Error() {
				c.logf("ubus: %v; retrying", err)
			}
			lastErr = err
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return ctx.Err()
			}
			backoff = min(backoff*2, c.MaxBackoff)
			continue
		}
		c.logf("ubus: connected to %s as %08x", c.path, conn.LocalID())
		lastErr, backoff = nil, c.MinBackoff
		select {
		case <-conn.Done():
			c.setConn(nil)
			c.logf("ubus: connection lost: %v", conn.Err())
		case <-ctx.Done():
			c.setConn(nil)
			conn.Close()
			return ctx.Err()
		}
	}
}

// connect dials, registers everything and makes the connection current; a
// connection on which something could not be registered is closed and the
// whole attempt retried.
func (c *Client) connect(ctx context.Context) (*Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := Dial(dctx, c.path)
	if err != nil {
		return nil, err
	}
	conn.Logf = c.Logf
	// Objects or listeners added while we register are picked up by the
	// next round, until a round finds nothing new.
	nObj, nLis := 0, 0
	for {
		c.mu.Lock()
		objects, listeners := c.objects[nObj:], c.listeners[nLis:]
		if len(objects) == 0 && len(listeners) == 0 {
			c.conn = conn
			close(c.changed)
			c.changed = make(chan struct{})
			hooks := slices.Clone(c.hooks)
			c.mu.Unlock()
			for _, h := range hooks {
				h(ctx, conn)
			}
			return conn, nil
		}
		nObj, nLis = nObj+len(objects), nLis+len(listeners)
		c.mu.Unlock()
		var errs []error
		for _, o := range objects {
			if _, err := conn.AddObject(dctx, o); err != nil {
				errs = append(errs, err)
			}
		}
		for _, l := range listeners {
			if err := conn.Listen(dctx, l.h, l.patterns...); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			conn.Close()
			return nil, err
		}
	}
}
