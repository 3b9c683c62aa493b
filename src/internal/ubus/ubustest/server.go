// Package ubustest is a small ubusd written in Go, for tests and for running
// connmgr on a development machine without OpenWrt. It follows the message
// exchanges of openwrt/ubus ubusd_proto.c, ubusd_obj.c and ubusd_event.c:
// HELLO, LOOKUP (exact, prefix*, all), ADD_OBJECT with signatures and object
// types, REMOVE_OBJECT, INVOKE forwarding with USER/GROUP, DATA and STATUS
// relaying, PING, the event object (register, send, ubus.object.add/remove)
// and SUBSCRIBE/UNSUBSCRIBE/NOTIFY. It has no ACLs (every client may do
// everything, as root may with ubusd) and no monitor object.
package ubustest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/afero/af-conn/internal/ubus"
)

// Options adjust a Server; the zero value behaves like ubusd.
type Options struct {
	// NewID returns candidate ids for clients, objects and object types, in
	// the order ubusd allocates them; ids below 1024 or in use are skipped.
	// Default: random, like ubusd.
	NewID func() uint32
	// Creds names the user and group of a client from its peer credentials
	// (USER and GROUP of forwarded invokes). Default: the system's names.
	Creds func(uid, gid uint32) (user, group string)
	// Logf receives notes about misbehaving clients.
	Logf func(format string, args ...any)
}

// Server is a running ubusd on a unix socket.
type Server struct {
	path string
	ln   *net.UnixListener
	opts Options

	mu       sync.Mutex
	clients  map[uint32]*client
	objects  map[uint32]*object
	paths    map[string]*object
	types    map[uint32]*objType
	patterns []*eventSource // sorted by pattern, like ubusd's avl tree
	eventSeq uint16
	evRound  int // ubusd's obj_event_seq: one event reaches an object once
	closed   bool

	wg sync.WaitGroup
}

type client struct {
	id      uint32
	conn    *net.UnixConn
	user    string
	group   string
	objects []*object // newest first, like ubusd's list_add
	out     *output
}

type objType struct {
	id      uint32
	refs    int
	methods ubus.Table
}

type object struct {
	id          uint32
	path        string // "" for anonymous objects
	typ         *objType
	client      *client   // nil for the event object
	subscribers []*object // subscriber objects, newest first
	targets     []*object // objects this one subscribed to, newest first
	invokeSeq   uint16
	eventSeen   int
}

type eventSource struct {
	pattern string
	partial bool
	obj     *object
}

// NewServer listens on path (removing a stale socket first) and serves
// until Close.
func NewServer(path string, opts *Options) (*Server, error) {
	s := &Server{
		path:    path,
		clients: map[uint32]*client{},
		objects: map[uint32]*object{},
		paths:   map[string]*object{},
		types:   map[uint32]*objType{},
	}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.NewID == nil {
		s.opts.NewID = randomID
	}
	if s.opts.Creds == nil {
		s.opts.Creds = systemCreds
	}
	s.objects[ubus.SystemObjectEvent] = &object{id: ubus.SystemObjectEvent}
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("ubustest: listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	s.ln = ln
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Path is the socket path.
func (s *Server) Path() string { return s.path }

// Close stops the server like a killed ubusd: the socket goes away and
// every client sees its connection end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	clients := make([]*client, 0, len(s.clients))
	for _, c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, c := range clients {
		c.conn.Close()
	}
	s.wg.Wait()
	return err
}

// Objects lists the paths of the published objects (for tests).
func (s *Server) Objects() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for p := range s.paths {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

func randomID() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.NativeEndian.Uint32(b[:])
}

func systemCreds(uid, gid uint32) (string, string) {
	un, gn := strconv.Itoa(int(uid)), strconv.Itoa(int(gid))
	if u, err := user.LookupId(un); err == nil {
		un = u.Username
	}
	if g, err := user.LookupGroupId(gn); err == nil {
		gn = g.Name
	}
	return un, gn
}

// allocID picks a fresh id >= 1024 not in use (ubus_alloc_id).
func (s *Server) allocID(inUse func(uint32) bool) uint32 {
	for {
		id := s.opts.NewID()
		if id >= ubus.SystemObjectMax && !inUse(id) {
			return id
		}
	}
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		uid, gid := peerCreds(conn)
		c := &client{conn: conn, out: newOutput(conn)}
		c.user, c.group = s.opts.Creds(uid, gid)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		c.id = s.allocID(func(id uint32) bool { return s.clients[id] != nil })
		s.clients[c.id] = c
		// HELLO: an empty blob, peer = the client's id.
		s.sendTo(c, &ubus.Message{Type: ubus.MsgHello, Peer: c.id})
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func peerCreds(conn *net.UnixConn) (uid, gid uint32) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, 0
	}
	_ = raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			uid, gid = cred.Uid, cred.Gid
		}
	})
	return uid, gid
}

func (s *Server) serve(c *client) {
	defer s.wg.Done()
	r := bufio.NewReader(c.conn)
	for {
		frame, err := ubus.ReadFrame(r)
		if err != nil {
			break // EOF, or a header ubusd would disconnect for
		}
		m, err := ubus.ParseMessage(frame)
		s.mu.Lock()
		if err != nil {
			// ubusd ignores attributes it cannot parse; the handlers then
			// find them missing. Answer like a message without attributes.
			s.logf("ubustest: client %08x: %v", c.id, err)
			m = &ubus.Message{Type: ubus.MsgType(frame[1]),
				Seq: binary.BigEndian.Uint16(frame[2:]), Peer: binary.BigEndian.Uint32(frame[4:])}
		}
		s.receive(c, m, frame)
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.freeClient(c)
	s.mu.Unlock()
	c.out.close()
	c.conn.Close()
}

// sendTo queues m for c. Called with s.mu held.
func (s *Server) sendTo(c *client, m *ubus.Message) {
	b, err := m.Marshal()
	if err != nil {
		s.logf("ubustest: encode %s for %08x: %v", m.Type, c.id, err)
		return
	}
	c.out.push(b)
}

// status is ubusd's retmsg: STATUS with the request's seq and peer.
func (s *Server) status(c *client, req *ubus.Message, st ubus.Status) {
	s.sendTo(c, &ubus.Message{Type: ubus.MsgStatus, Seq: req.Seq, Peer: req.Peer,
		Attrs: []ubus.Attr{{ID: ubus.AttrStatus, Value: uint32(st)}}})
}

// reply sends a DATA or STATUS with the request's seq and peer
// (ubus_proto_send_msg_from_blob).
func (s *Server) reply(c *client, req *ubus.Message, typ ubus.MsgType, attrs ...ubus.Attr) {
	s.sendTo(c, &ubus.Message{Type: typ, Seq: req.Seq, Peer: req.Peer, Attrs: attrs})
}

const noStatus = -1 // the handler answered (or forwarded) itself

// receive handles one message (ubusd_proto_receive_message). s.mu is held.
func (s *Server) receive(c *client, m *ubus.Message, frame []byte) {
	var st int
	switch m.Type {
	case ubus.MsgPing:
		pong := bytes.Clone(frame)
		pong[1] = byte(ubus.MsgData)
		c.out.push(pong)
		st = 0
	case ubus.MsgAddObject:
		st = s.addObject(c, m)
	case ubus.MsgRemoveObject:
		st = s.removeObject(c, m)
	case ubus.MsgLookup:
		st = s.lookup(c, m)
	case ubus.MsgInvoke:
		st = s.invoke(c, m)
	case ubus.MsgStatus, ubus.MsgData:
		s.response(c, m, frame)
		st = noStatus
	case ubus.MsgSubscribe:
		st = s.subscribe(c, m)
	case ubus.MsgUnsubscribe:
		st = s.unsubscribe(c, m)
	case ubus.MsgNotify:
		st = s.notify(c, m)
	default:
		st = int(ubus.StatusInvalidCommand)
	}
	if st != noStatus {
		s.status(c, m, ubus.Status(st))
	}
}

func (s *Server) addObject(c *client, m *ubus.Message) int {
	var typ *objType
	if tid, ok := m.U32(ubus.AttrObjType); ok {
		typ = s.types[tid] // an unknown type leaves the object untyped, as in ubusd
	} else if sig, ok := m.Table(ubus.AttrSignature); ok {
		typ = &objType{methods: sig}
		typ.id = s.allocID(func(id uint32) bool { return s.types[id] != nil })
		s.types[typ.id] = typ
	}
	// Like ubusd: the object id is taken before the path is checked.
	path, hasPath := m.Str(ubus.AttrObjPath)
	obj := &object{path: path, typ: typ}
	obj.id = s.allocID(func(id uint32) bool { return s.objects[id] != nil })
	if typ != nil {
		typ.refs++
	}
	if hasPath && s.paths[path] != nil {
		s.unrefType(typ)
		return int(ubus.StatusInvalidArgument)
	}
	s.objects[obj.id] = obj
	if hasPath {
		s.paths[path] = obj
		s.sendObjEvent(obj, true)
	}
	obj.client = c
	c.objects = append([]*object{obj}, c.objects...)

	attrs := []ubus.Attr{{ID: ubus.AttrObjID, Value: obj.id}}
	if _, ok := m.Get(ubus.AttrSignature); ok && typ != nil {
		attrs = append(attrs, ubus.Attr{ID: ubus.AttrObjType, Value: typ.id})
	}
	s.reply(c, m, ubus.MsgData, attrs...)
	return 0
}

// owned finds object id and checks that c published it.
func (s *Server) owned(c *client, id uint32) (*object, int) {
	obj := s.objects[id]
	if obj == nil {
		return nil, int(ubus.StatusNotFound)
	}
	if obj.client != c {
		return nil, int(ubus.StatusPermissionDenied)
	}
	return obj, 0
}

func (s *Server) unrefType(t *objType) {
	if t == nil {
		return
	}
	t.refs--
	if t.refs <= 0 {
		delete(s.types, t.id)
	}
}

func (s *Server) removeObject(c *client, m *ubus.Message) int {
	id, ok := m.U32(ubus.AttrObjID)
	if !ok {
		return int(ubus.StatusInvalidArgument)
	}
	obj, st := s.owned(c, id)
	if obj == nil {
		return st
	}
	attrs := []ubus.Attr{{ID: ubus.AttrObjID, Value: obj.id}}
	if obj.typ != nil && obj.typ.refs == 1 {
		attrs = append(attrs, ubus.Attr{ID: ubus.AttrObjType, Value: obj.typ.id})
	}
	s.reply(c, m, ubus.MsgData, attrs...)
	s.freeObject(obj)
	return 0
}

// sendObj answers a LOOKUP with one object (ubusd_send_obj).
func (s *Server) sendObj(c *client, m *ubus.Message, obj *object) {
	if obj.typ == nil {
		return
	}
	s.reply(c, m, ubus.MsgData,
		ubus.Attr{ID: ubus.AttrObjPath, Value: obj.path},
		ubus.Attr{ID: ubus.AttrObjID, Value: obj.id},
		ubus.Attr{ID: ubus.AttrObjType, Value: obj.typ.id},
		ubus.Attr{ID: ubus.AttrSignature, Value: obj.typ.methods})
}

func (s *Server) sortedPaths() []string {
	out := make([]string, 0, len(s.paths))
	for p := range s.paths {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func (s *Server) lookup(c *client, m *ubus.Message) int {
	path, ok := m.Str(ubus.AttrObjPath)
	if !ok {
		for _, p := range s.sortedPaths() {
			s.sendObj(c, m, s.paths[p])
		}
		return 0
	}
	if path == "" {
		return int(ubus.StatusInvalidArgument)
	}
	if !strings.HasSuffix(path, "*") {
		obj := s.paths[path]
		if obj == nil {
			return int(ubus.StatusNotFound)
		}
		s.sendObj(c, m, obj)
		return 0
	}
	prefix := strings.TrimSuffix(path, "*")
	found := false
	for _, p := range s.sortedPaths() {
		if strings.HasPrefix(p, prefix) {
			found = true
			s.sendObj(c, m, s.paths[p])
		}
	}
	if !found {
		return int(ubus.StatusNotFound)
	}
	return 0
}

// forwardInvoke sends an INVOKE for obj to its client (ubusd_forward_invoke);
// seq comes from the request, peer is the caller's client id.
func (s *Server) forwardInvoke(from *client, obj *object, method string, m *ubus.Message, pre ...ubus.Attr) {
	attrs := append(pre,
		ubus.Attr{ID: ubus.AttrObjID, Value: obj.id},
		ubus.Attr{ID: ubus.AttrMethod, Value: method},
		ubus.Attr{ID: ubus.AttrUser, Value: from.user},
		ubus.Attr{ID: ubus.AttrGroup, Value: from.group})
	if data, ok := m.Get(ubus.AttrData); ok {
		attrs = append(attrs, ubus.Attr{ID: ubus.AttrData, Value: data})
	}
	s.sendTo(obj.client, &ubus.Message{Type: ubus.MsgInvoke, Seq: m.Seq, Peer: from.id, Attrs: attrs})
}

func (s *Server) invoke(c *client, m *ubus.Message) int {
	method, ok1 := m.Str(ubus.AttrMethod)
	id, ok2 := m.U32(ubus.AttrObjID)
	if !ok1 || !ok2 {
		return int(ubus.StatusInvalidArgument)
	}
	obj := s.objects[id]
	if obj == nil {
		return int(ubus.StatusNotFound)
	}
	if obj.client == nil {
		return s.eventRecv(c, method, m)
	}
	s.forwardInvoke(c, obj, method, m)
	return noStatus
}

// response relays a DATA or STATUS from an object's client to the caller
// (ubusd_handle_response): the same message, peer set to the object id.
func (s *Server) response(c *client, m *ubus.Message, frame []byte) {
	id, ok := m.U32(ubus.AttrObjID)
	if !ok {
		return
	}
	if _, ok := m.Get(ubus.AttrStatus); m.Type == ubus.MsgStatus && !ok {
		return
	}
	if _, ok := m.Get(ubus.AttrData); m.Type == ubus.MsgData && !ok {
		return
	}
	obj := s.objects[id]
	if obj == nil || obj.client != c {
		return
	}
	to := s.clients[m.Peer]
	if to == nil {
		return
	}
	out := bytes.Clone(frame)
	binary.BigEndian.PutUint32(out[4:], id)
	to.out.push(out)
}

// watchArgs checks OBJID (c's own subscriber object) and TARGET of a
// SUBSCRIBE or UNSUBSCRIBE; st is the status to answer when obj is nil.
func (s *Server) watchArgs(c *client, m *ubus.Message) (obj *object, target uint32, st int) {
	id, ok1 := m.U32(ubus.AttrObjID)
	tid, ok2 := m.U32(ubus.AttrTarget)
	if !ok1 || !ok2 {
		return nil, 0, int(ubus.StatusInvalidArgument)
	}
	obj = s.objects[id]
	if obj == nil {
		return nil, 0, int(ubus.StatusNotFound)
	}
	if obj.client != c {
		return nil, 0, int(ubus.StatusInvalidArgument)
	}
	return obj, tid, 0
}

func (s *Server) subscribe(c *client, m *ubus.Message) int {
	obj, tid, st := s.watchArgs(c, m)
	if obj == nil {
		return st
	}
	target := s.objects[tid]
	if target == nil || target.client == nil {
		return int(ubus.StatusNotFound)
	}
	if target.client == c {
		return int(ubus.StatusInvalidArgument)
	}
	first := len(target.subscribers) == 0
	target.subscribers = append([]*object{obj}, target.subscribers...)
	obj.targets = append([]*object{target}, obj.targets...)
	if first {
		s.notifySubscription(target)
	}
	return 0
}

func (s *Server) unsubscribe(c *client, m *ubus.Message) int {
	obj, tid, st := s.watchArgs(c, m)
	if obj == nil {
		return st
	}
	for _, t := range obj.targets {
		if t.id == tid {
			s.dropSubscription(obj, t)
			return 0
		}
	}
	return int(ubus.StatusNotFound)
}

// dropSubscription ends sub's subscription to target (ubus_unsubscribe).
func (s *Server) dropSubscription(sub, target *object) {
	target.subscribers = without(target.subscribers, sub)
	sub.targets = without(sub.targets, target)
	if len(target.subscribers) == 0 {
		s.notifySubscription(target)
	}
}

func without(list []*object, o *object) []*object {
	for i, x := range list {
		if x == o {
			return append(list[:i:i], list[i+1:]...)
		}
	}
	return list
}

// notifySubscription tells an object's client whether it has subscribers.
func (s *Server) notifySubscription(obj *object) {
	if obj.client == nil {
		return
	}
	obj.invokeSeq++
	s.sendTo(obj.client, &ubus.Message{Type: ubus.MsgNotify, Seq: obj.invokeSeq, Attrs: []ubus.Attr{
		{ID: ubus.AttrObjID, Value: obj.id}, {ID: ubus.AttrActive, Value: len(obj.subscribers) > 0}}})
}

func (s *Server) notify(c *client, m *ubus.Message) int {
	method, ok1 := m.Str(ubus.AttrMethod)
	id, ok2 := m.U32(ubus.AttrObjID)
	if !ok1 || !ok2 {
		return int(ubus.StatusInvalidArgument)
	}
	noReply := m.Bool(ubus.AttrNoReply)
	obj, st := s.owned(c, id)
	if obj == nil {
		return st
	}
	if !noReply {
		subs := []uint32{}
		for _, sub := range obj.subscribers {
			subs = append(subs, sub.id)
		}
		s.reply(c, m, ubus.MsgStatus,
			ubus.Attr{ID: ubus.AttrObjID, Value: obj.id},
			ubus.Attr{ID: ubus.AttrSubscribers, Value: subs},
			ubus.Attr{ID: ubus.AttrStatus, Value: uint32(0)})
	}
	for _, sub := range obj.subscribers {
		var pre []ubus.Attr
		if noReply {
			pre = append(pre, ubus.Attr{ID: ubus.AttrNoReply, Value: true})
		}
		s.forwardInvoke(c, sub, method, m, pre...)
	}
	return noStatus
}

// eventRecv handles INVOKE on the event object (ubusd_event_recv).
func (s *Server) eventRecv(c *client, method string, m *ubus.Message) int {
	data, ok := m.Table(ubus.AttrData)
	if !ok {
		return int(ubus.StatusInvalidArgument)
	}
	switch method {
	case "register":
		return s.registerPattern(c, data)
	case "send":
		id, ok1 := typed[string](data, "id")
		ev, ok2 := typed[ubus.Table](data, "data")
		if !ok1 || !ok2 {
			return int(ubus.StatusInvalidArgument)
		}
		if strings.HasPrefix(id, "ubus.") {
			return int(ubus.StatusPermissionDenied)
		}
		s.sendEvent(c, id, ev)
		return 0
	}
	return int(ubus.StatusInvalidCommand)
}

// typed finds the first member named name of exactly type T, as
// blobmsg_parse with a typed policy does.
func typed[T any](t ubus.Table, name string) (T, bool) {
	for _, f := range t {
		if v, ok := f.Value.(T); ok && f.Name == name {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func (s *Server) registerPattern(c *client, data ubus.Table) int {
	oid, ok1 := typed[int32](data, "object")
	pattern, ok2 := typed[string](data, "pattern")
	if !ok1 || !ok2 {
		return int(ubus.StatusInvalidArgument)
	}
	id := uint32(oid)
	if id < ubus.SystemObjectMax {
		return int(ubus.StatusPermissionDenied)
	}
	obj, st := s.owned(c, id)
	if obj == nil {
		return st
	}
	if pattern == "" {
		return int(ubus.StatusPermissionDenied)
	}
	ev := &eventSource{obj: obj}
	ev.pattern, ev.partial = strings.CutSuffix(pattern, "*")
	i := sort.Search(len(s.patterns), func(i int) bool { return s.patterns[i].pattern > ev.pattern })
	s.patterns = append(s.patterns[:i], append([]*eventSource{ev}, s.patterns[i:]...)...)
	return 0
}

// matchLen is ubus_strmatch_len: the common prefix length, and whether the
// strings are equal.
func matchLen(a, b string) (int, bool) {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n, n == len(a) && n == len(b)
}

// sendEvent delivers an event to the objects listening for it
// (ubusd_send_event), each at most once, never back to the sender.
func (s *Server) sendEvent(from *client, id string, data ubus.Table) {
	s.evRound++
	best := 0
	for _, ev := range s.patterns {
		n, full := matchLen(id, ev.pattern)
		if n < best {
			break
		}
		best = n
		if !full && (!ev.partial || n != len(ev.pattern)) {
			continue
		}
		obj := ev.obj
		if obj.client == from || obj.eventSeen == s.evRound {
			continue
		}
		obj.eventSeen = s.evRound
		s.eventSeq++
		s.sendTo(obj.client, &ubus.Message{Type: ubus.MsgInvoke, Seq: s.eventSeq, Attrs: []ubus.Attr{
			{ID: ubus.AttrObjID, Value: obj.id}, {ID: ubus.AttrMethod, Value: id}, {ID: ubus.AttrData, Value: data}}})
	}
}

func (s *Server) sendObjEvent(obj *object, add bool) {
	id := "ubus.object.remove"
	if add {
		id = "ubus.object.add"
	}
	s.sendEvent(nil, id, ubus.Table{{Name: "id", Value: int32(obj.id)}, {Name: "path", Value: obj.path}})
}

// freeObject removes an object and everything tied to it (ubusd_free_object).
func (s *Server) freeObject(obj *object) {
	for len(obj.targets) > 0 {
		s.dropSubscription(obj, obj.targets[0])
	}
	for len(obj.subscribers) > 0 {
		sub := obj.subscribers[0]
		if sub.client != nil {
			sub.invokeSeq++
			s.sendTo(sub.client, &ubus.Message{Type: ubus.MsgUnsubscribe, Seq: sub.invokeSeq, Attrs: []ubus.Attr{
				{ID: ubus.AttrObjID, Value: sub.id}, {ID: ubus.AttrTarget, Value: obj.id}}})
		}
		s.dropSubscription(sub, obj)
	}
	kept := s.patterns[:0]
	for _, ev := range s.patterns {
		if ev.obj != obj {
			kept = append(kept, ev)
		}
	}
	s.patterns = kept
	if obj.path != "" {
		s.sendObjEvent(obj, false)
		delete(s.paths, obj.path)
	}
	if obj.client != nil {
		obj.client.objects = without(obj.client.objects, obj)
	}
	delete(s.objects, obj.id)
	s.unrefType(obj.typ)
}

func (s *Server) freeClient(c *client) {
	for len(c.objects) > 0 {
		s.freeObject(c.objects[0])
	}
	delete(s.clients, c.id)
}

// output writes one client's messages in order without ever blocking the
// server (ubusd's tx_queue); after a failed write the rest is dropped.
type output struct {
	conn   *net.UnixConn
	q      *ubus.Queue
	failed bool // only touched on q's goroutine
}

func newOutput(conn *net.UnixConn) *output {
	return &output{conn: conn, q: ubus.NewQueue()}
}

func (o *output) push(b []byte) {
	o.q.Push(func() {
		if o.failed {
			return
		}
		if _, err := o.conn.Write(b); err != nil {
			o.failed = true
			o.conn.Close()
		}
	})
}

func (o *output) close() { o.q.Close() }
