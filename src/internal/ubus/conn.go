package ubus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ErrClosed is returned for requests on a connection that has ended.
var ErrClosed = errors.New("ubus connection closed")

// writeTimeout bounds how long a write may block on a ubusd that stopped
// reading; the connection is given up after it.
const writeTimeout = 5 * time.Second

// helloTimeout bounds the wait for ubusd's HELLO after connecting.
const helloTimeout = 2 * time.Second

type reqKey struct {
	seq  uint16
	peer uint32
}

// request is an outstanding LOOKUP, INVOKE, ADD_OBJECT, ... waiting for its
// STATUS; DATA messages that arrive before it are collected.
type request struct {
	data []*Message
	done chan Status // buffered; receives the final status
	// onData, when set, sees each DATA message on the reader goroutine with c.mu held,
	// before any later message is handled (ADD_OBJECT records its object there).
	onData func(m *Message)
}

// objKind tells what an object registered on this connection is for.
type objKind uint8

const (
	objPublished  objKind = iota // an Object with methods
	objListener                  // an anonymous object that receives events
	objSubscriber                // an anonymous object that receives notifications
)

type localObject struct {
	kind     objKind
	obj      *Object             // objPublished
	onEvent  EventHandler        // objListener
	onNotify func(string, Table) // objSubscriber
	onRemove func(target uint32) // objSubscriber
	active   bool                // objPublished: has subscribers
}

// Conn is one connection to ubusd. Its methods may be called from any
// goroutine. Method handlers run each in their own goroutine, at most MaxCalls at once; event,
// notification and subscription callbacks run one at a time in order.
type Conn struct {
	nc      net.Conn
	localID uint32

	wmu sync.Mutex // serialises writes of whole messages

	mu      sync.Mutex
	seq     uint16
	pending map[reqKey]*request
	objects map[uint32]*localObject
	byObj   map[*Object]uint32
	err     error // why the connection ended, once it did

	ctx    context.Context // ends with the connection; handlers get it
	cancel context.CancelFunc
	done   chan struct{}
	queue  *Queue
	calls  chan struct{} // one token per handler running (MaxCalls)
	busy   LogLimiter    // refusals noted through Logf

	// Logf, when set before use, receives notes about dropped input.
	Logf func(format string, args ...any)
}

// Dial connects to the ubusd socket at path and waits for its HELLO.
func Dial(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to ubus at %s: %w", path, err)
	}
	deadline := time.Now().Add(helloTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = nc.SetReadDeadline(deadline)
	r := bufio.NewReaderSize(nc, 64<<10)
	hello, err := ReadMessage(r)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("ubus at %s: read HELLO: %w", path, err)
	}
	if hello.Type != MsgHello || hello.Peer <= 1 {
		nc.Close()
		return nil, fmt.Errorf("ubus at %s: want HELLO with a client id, got %s", path, hello)
	}
	_ = nc.SetReadDeadline(time.Time{})
	c := &Conn{
		nc:      nc,
		localID: hello.Peer,
		pending: map[reqKey]*request{},
		objects: map[uint32]*localObject{},
		byObj:   map[*Object]uint32{},
		done:    make(chan struct{}),
		queue:   NewQueue(),
		calls:   make(chan struct{}, MaxCalls),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.readLoop(r)
	return c, nil
}

// LocalID is the client id ubusd gave this connection.
func (c *Conn) LocalID() uint32 { return c.localID }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err tells why the connection ended (nil while it is up).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection; outstanding requests fail with ErrClosed.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	<-c.done
	return nil
}

func (c *Conn) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// fail ends the connection once, with err as the reason.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = map[reqKey]*request{}
	c.mu.Unlock()
	c.nc.Close()
	c.cancel()
	for _, r := range pending {
		r.done <- StatusConnectionFailed
	}
	c.queue.Close()
}

func (c *Conn) readLoop(r *bufio.Reader) {
	defer close(c.done)
	for {
		frame, err := readFrame(r, MaxInvokeLen)
		var m *Message
		if err == nil {
			m, err = ParseMessage(frame)
		}
		if err != nil {
			var me *MalformedError
			if errors.As(err, &me) {
				// Framing is intact: skip the message like libubus does. A flood of
				// them is noted at the refusals' bounded rate.
				if ok, dropped := c.busy.Allow(time.Now()); ok {
					c.logf("ubus: dropped malformed message: %v (%d more refused before it)", err, dropped)
				}
				continue
			}
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("ubusd closed the connection: %w", io.EOF)
			}
			c.fail(err)
			return
		}
		c.handle(m)
	}
}

func (c *Conn) handle(m *Message) {
	switch m.Type {
	case MsgStatus, MsgData:
		c.handleReply(m)
	case MsgInvoke:
		c.handleInvoke(m)
	case MsgNotify:
		id, _ := m.U32(AttrObjID)
		c.mu.Lock()
		o := c.objects[id]
		_, hasActive := m.Get(AttrActive)
		if o == nil || o.kind != objPublished || !hasActive {
			c.mu.Unlock()
			return
		}
		o.active = m.Bool(AttrActive)
		active, cb := o.active, o.obj.OnSubscribers
		c.mu.Unlock()
		if cb != nil {
			c.queue.Push(func() { cb(active) })
		}
	case MsgUnsubscribe:
		id, _ := m.U32(AttrObjID)
		target, ok := m.U32(AttrTarget)
		c.mu.Lock()
		o := c.objects[id]
		c.mu.Unlock()
		if ok && o != nil && o.kind == objSubscriber && o.onRemove != nil {
			c.queue.Push(func() { o.onRemove(target) })
		}
	}
}

func (c *Conn) handleReply(m *Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := reqKey{m.Seq, m.Peer}
	r := c.pending[k]
	if r == nil {
		return
	}
	if m.Type == MsgData {
		if r.onData != nil {
			r.onData(m)
		}
		r.data = append(r.data, m)
		return
	}
	st, ok := m.Status()
	if !ok {
		st = StatusInvalidArgument // as ubus_process_req_status
	}
	delete(c.pending, k)
	r.done <- st
}

// handleInvoke answers an INVOKE the way ubus_process_invoke does.
func (c *Conn) handleInvoke(m *Message) {
	id, _ := m.U32(AttrObjID)
	noReply := m.Bool(AttrNoReply)
	c.mu.Lock()
	o := c.objects[id]
	c.mu.Unlock()
	reply := func(data Table, st Status, objID uint32) {
		if noReply {
			return
		}
		if data != nil {
			c.send(&Message{Type: MsgData, Seq: m.Seq, Peer: m.Peer, Attrs: []Attr{
				{AttrObjID, objID}, {AttrData, data}}})
		}
		c.send(&Message{Type: MsgStatus, Seq: m.Seq, Peer: m.Peer, Attrs: []Attr{
			{AttrStatus, uint32(st)}, {AttrObjID, objID}}})
	}
	if o == nil {
		reply(nil, StatusNotFound, 0)
		return
	}
	method, ok := m.Str(AttrMethod)
	if !ok {
		reply(nil, StatusInvalidArgument, id)
		return
	}
	var h *Method
	if o.kind == objPublished {
		if h = o.obj.method(method); h == nil {
			reply(nil, StatusMethodNotFound, id)
			return
		}
	}
	args, ok := m.Table(AttrData)
	if !ok {
		reply(nil, StatusInvalidArgument, id)
		return
	}
	switch o.kind {
	case objListener:
		c.queue.Push(func() { o.onEvent(method, args) })
		reply(nil, StatusOK, id)
	case objSubscriber:
		c.queue.Push(func() { o.onNotify(method, args) })
		reply(nil, StatusOK, id)
	default:
		select {
		case c.calls <- struct{}{}:
		default:
			if ok, dropped := c.busy.Allow(time.Now()); ok {
				c.logf("ubus: call %s.%s refused: %d calls in progress (%d more refused before it)", o.obj.Name, method, MaxCalls, dropped)
			}
			reply(Table{{Name: "error", Value: fmt.Sprintf("busy: %d calls in progress, try again", MaxCalls)}}, StatusTimeout, id)
			return
		}
		req := &Request{Object: o.obj.Name, Method: method, Args: args, Peer: m.Peer}
		req.User, _ = m.Str(AttrUser)
		req.Group, _ = m.Str(AttrGroup)
		go func() {
			defer func() { <-c.calls }()
			data, err := safeCall(c.ctx, h.Handler, req)
			reply(data, StatusOf(err), id)
		}()
	}
}

// safeCall runs a handler and turns a panic into UNKNOWN_ERROR, so one bad
// handler cannot take the daemon down.
func safeCall(ctx context.Context, h MethodHandler, req *Request) (data Table, err error) {
	defer func() {
		if p := recover(); p != nil {
			data, err = nil, fmt.Errorf("handler %s.%s panicked: %v: %w", req.Object, req.Method, p, StatusUnknownError)
		}
	}()
	return h(ctx, req)
}

// send writes one message; a failed write ends the connection.
func (c *Conn) send(m *Message) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.Err(); err != nil {
		return err
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.nc.Write(b); err != nil {
		c.fail(fmt.Errorf("write ubus %s: %w", m.Type, err))
		return c.Err()
	}
	return nil
}

// request sends m with a fresh sequence number and waits for its STATUS.
// It returns the DATA messages that came before the STATUS.
func (c *Conn) request(ctx context.Context, m *Message) ([]*Message, error) {
	return c.requestWith(ctx, m, nil)
}

// requestWith is request with a DATA hook (see request.onData).
func (c *Conn) requestWith(ctx context.Context, m *Message, onData func(*Message)) ([]*Message, error) {
	r := &request{done: make(chan Status, 1), onData: onData}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %v", ErrClosed, err)
	}
	// Skip sequence numbers still in use after a wrap-around.
	for {
		c.seq++
		if _, busy := c.pending[reqKey{c.seq, m.Peer}]; !busy {
			break
		}
	}
	m.Seq = c.seq
	k := reqKey{m.Seq, m.Peer}
	c.pending[k] = r
	c.mu.Unlock()

	if err := c.send(m); err != nil {
		c.forget(k)
		return nil, err
	}
	select {
	case st := <-r.done:
		c.mu.Lock()
		data := r.data
		err := c.err
		c.mu.Unlock()
		if st == StatusConnectionFailed && err != nil {
			return data, fmt.Errorf("%w: %w", st, err)
		}
		if st != StatusOK {
			return data, st
		}
		return data, nil
	case <-ctx.Done():
		c.forget(k)
		return nil, fmt.Errorf("ubus %s: %w (%w)", m.Type, StatusTimeout, ctx.Err())
	}
}

func (c *Conn) forget(k reqKey) {
	c.mu.Lock()
	delete(c.pending, k)
	c.mu.Unlock()
}

// Lookup lists objects: all for path "", those whose path starts with a
// prefix for "prefix*", else the one object named path (StatusNotFound if
// none).
func (c *Conn) Lookup(ctx context.Context, path string) ([]ObjectInfo, error) {
	m := &Message{Type: MsgLookup}
	if path != "" {
		m.Attrs = []Attr{{AttrObjPath, path}}
	}
	data, err := c.request(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("ubus lookup %q: %w", path, err)
	}
	var out []ObjectInfo
	for _, d := range data {
		var oi ObjectInfo
		var ok1, ok2, ok3 bool
		oi.ID, ok1 = d.U32(AttrObjID)
		oi.Path, ok2 = d.Str(AttrObjPath)
		oi.TypeID, ok3 = d.U32(AttrObjType)
		if !ok1 || !ok2 || !ok3 {
			continue // ubus_lookup_cb skips these too
		}
		oi.Signature, _ = d.Table(AttrSignature)
		out = append(out, oi)
	}
	return out, nil
}

// LookupID returns the id of the object named path.
func (c *Conn) LookupID(ctx context.Context, path string) (uint32, error) {
	m := &Message{Type: MsgLookup, Attrs: []Attr{{AttrObjPath, path}}}
	data, err := c.request(ctx, m)
	if err != nil {
		return 0, fmt.Errorf("ubus lookup %q: %w", path, err)
	}
	for _, d := range data {
		if id, ok := d.U32(AttrObjID); ok {
			return id, nil
		}
	}
	return 0, fmt.Errorf("ubus lookup %q: %w", path, StatusNotFound)
}

// Invoke calls method on the object with the given id and returns the
// first DATA table of the reply (nil when there was none).
func (c *Conn) Invoke(ctx context.Context, id uint32, method string, args Table) (Table, error) {
	if args == nil {
		args = Table{}
	}
	m := &Message{Type: MsgInvoke, Peer: id, Attrs: []Attr{
		{AttrObjID, id}, {AttrMethod, method}, {AttrData, args}}}
	data, err := c.request(ctx, m)
	var out Table
	for _, d := range data {
		if t, ok := d.Table(AttrData); ok {
			out = t
			break
		}
	}
	if err != nil {
		return out, err
	}
	return out, nil
}

// Call looks up the object named path and invokes method on it, like
// `ubus call path method args`.
func (c *Conn) Call(ctx context.Context, path, method string, args Table) (Table, error) {
	id, err := c.LookupID(ctx, path)
	if err != nil {
		return nil, err
	}
	out, err := c.Invoke(ctx, id, method, args)
	if err != nil {
		return out, fmt.Errorf("ubus call %s %s: %w", path, method, err)
	}
	return out, nil
}

// addObject sends ADD_OBJECT and records the object under the id ubusd
// answers with. attrs is empty for anonymous objects. The object is recorded
// as the DATA carrying its id is read, like libubus does: ubusd may forward
// an INVOKE (or an event) for it right behind that DATA, before this
// goroutine runs again.
func (c *Conn) addObject(ctx context.Context, attrs []Attr, lo *localObject) (uint32, error) {
	var id uint32
	var got bool
	record := func(d *Message) { // c.mu held
		oid, ok := d.U32(AttrObjID)
		if !ok || got {
			return
		}
		id, got = oid, true
		c.objects[oid] = lo
		if lo.obj != nil {
			c.byObj[lo.obj] = oid
		}
	}
	_, err := c.requestWith(ctx, &Message{Type: MsgAddObject, Attrs: attrs}, record)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if got { // ubusd took it but the request failed after all: forget it
			delete(c.objects, id)
			if lo.obj != nil {
				delete(c.byObj, lo.obj)
			}
		}
		return 0, err
	}
	if !got {
		return 0, StatusNoData // as ubus_add_object when no id came back
	}
	return id, nil
}

// AddObject publishes obj with its method signature and returns its id.
func (c *Conn) AddObject(ctx context.Context, obj *Object) (uint32, error) {
	sig, err := obj.signature()
	if err != nil {
		return 0, err
	}
	if obj.Name == "" {
		return 0, fmt.Errorf("ubus add object: empty name")
	}
	c.mu.Lock()
	_, dup := c.byObj[obj]
	c.mu.Unlock()
	if dup {
		return 0, fmt.Errorf("ubus add object %q: already added", obj.Name)
	}
	id, err := c.addObject(ctx, []Attr{{AttrObjPath, obj.Name}, {AttrSignature, sig}},
		&localObject{kind: objPublished, obj: obj})
	if err != nil {
		return 0, fmt.Errorf("ubus add object %q: %w", obj.Name, err)
	}
	return id, nil
}

// RemoveObject withdraws a published object.
func (c *Conn) RemoveObject(ctx context.Context, obj *Object) error {
	c.mu.Lock()
	id, ok := c.byObj[obj]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("ubus remove object %q: %w", obj.Name, StatusNotFound)
	}
	if _, err := c.request(ctx, &Message{Type: MsgRemoveObject, Attrs: []Attr{{AttrObjID, id}}}); err != nil {
		return fmt.Errorf("ubus remove object %q: %w", obj.Name, err)
	}
	c.mu.Lock()
	delete(c.objects, id)
	delete(c.byObj, obj)
	c.mu.Unlock()
	return nil
}

// ObjectID returns the id of a published object on this connection.
func (c *Conn) ObjectID(obj *Object) (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.byObj[obj]
	return id, ok
}

// HasSubscribers tells whether ubusd reported subscribers for obj.
func (c *Conn) HasSubscribers(obj *Object) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.byObj[obj]
	return ok && c.objects[id].active
}

// Notify sends a notification of type typ to the subscribers of obj,
// without waiting for their answers (ubus_notify with a negative timeout).
// Nothing is sent while obj has no subscribers.
func (c *Conn) Notify(obj *Object, typ string, data Table) error {
	c.mu.Lock()
	id, ok := c.byObj[obj]
	active := ok && c.objects[id].active
	if ok && active {
		c.seq++
	}
	seq := c.seq
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("ubus notify %q: object not added", obj.Name)
	}
	if !active {
		return nil
	}
	if data == nil {
		data = Table{}
	}
	return c.send(&Message{Type: MsgNotify, Seq: seq, Peer: id, Attrs: []Attr{
		{AttrObjID, id}, {AttrMethod, typ}, {AttrData, data}, {AttrNoReply, true}}})
}

// Send broadcasts an event, like `ubus send event data`.
func (c *Conn) Send(ctx context.Context, event string, data Table) error {
	if data == nil {
		data = Table{}
	}
	args := Table{{"id", event}, {"data", data}}
	m := &Message{Type: MsgInvoke, Peer: SystemObjectEvent, Attrs: []Attr{
		{AttrObjID, uint32(SystemObjectEvent)}, {AttrMethod, "send"}, {AttrData, args}}}
	if _, err := c.request(ctx, m); err != nil {
		return fmt.Errorf("ubus send %s: %w", event, err)
	}
	return nil
}

// Listen registers h for events whose name matches one of patterns (an
// exact name, or a prefix followed by '*'), like `ubus listen`.
func (c *Conn) Listen(ctx context.Context, h EventHandler, patterns ...string) error {
	if len(patterns) == 0 {
		patterns = []string{"*"}
	}
	id, err := c.addObject(ctx, nil, &localObject{kind: objListener, onEvent: h})
	if err != nil {
		return fmt.Errorf("ubus listen: add object: %w", err)
	}
	for _, p := range patterns {
		args := Table{{"object", int32(id)}, {"pattern", p}}
		m := &Message{Type: MsgInvoke, Peer: SystemObjectEvent, Attrs: []Attr{
			{AttrObjID, uint32(SystemObjectEvent)}, {AttrMethod, "register"}, {AttrData, args}}}
		if _, err := c.request(ctx, m); err != nil {
			return fmt.Errorf("ubus listen %q: %w", p, err)
		}
	}
	return nil
}

// Subscribe subscribes to the notifications of the object named path, like
// `ubus subscribe path`. onNotify receives each notification; onRemove, if
// set, is told when the object went away.
func (c *Conn) Subscribe(ctx context.Context, path string, onNotify func(typ string, data Table), onRemove func()) error {
	target, err := c.LookupID(ctx, path)
	if err != nil {
		return err
	}
	lo := &localObject{kind: objSubscriber, onNotify: onNotify}
	if onRemove != nil {
		lo.onRemove = func(uint32) { onRemove() }
	}
	id, err := c.addObject(ctx, nil, lo)
	if err != nil {
		return fmt.Errorf("ubus subscribe %s: add object: %w", path, err)
	}
	m := &Message{Type: MsgSubscribe, Attrs: []Attr{{AttrObjID, id}, {AttrTarget, target}}}
	if _, err := c.request(ctx, m); err != nil {
		return fmt.Errorf("ubus subscribe %s: %w", path, err)
	}
	return nil
}

// Queue runs functions one at a time, in the order pushed, on its own
// goroutine; Push never blocks. Conn runs its callbacks on one (a callback
// may itself call ubus without stalling the reader); ubustest writes each
// client's messages through one.
type Queue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []func()
	closed bool
}

// NewQueue starts a Queue.
func NewQueue() *Queue {
	q := &Queue{}
	q.cond = sync.NewCond(&q.mu)
	go q.run()
	return q
}

// Push queues f; after Close it is dropped.
func (q *Queue) Push(f func()) {
	q.mu.Lock()
	if !q.closed {
		q.items = append(q.items, f)
		q.cond.Signal()
	}
	q.mu.Unlock()
}

// Close lets the queue run what it holds and then stop.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Signal()
	q.mu.Unlock()
}

func (q *Queue) run() {
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		if len(q.items) == 0 {
			q.mu.Unlock()
			return
		}
		f := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		q.mu.Unlock()
		f()
	}
}
