package ubus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxMsgLen is ubusd's UBUS_MAX_MSGLEN: the largest padded payload of one
// message. ubusd drops a client that announces more; so do we.
const MaxMsgLen = 1048576

// HeaderLen is the size of the fixed message header (struct ubus_msghdr).
const HeaderLen = 8

// System object ids (ubusmsg.h).
const (
	SystemObjectEvent   = 1
	SystemObjectACL     = 2
	SystemObjectMonitor = 3
	SystemObjectMax     = 1024 // object and client ids below this are reserved
)

// MsgType is the type byte of a message header (enum ubus_msg_type).
type MsgType uint8

// Message types, numbered as in ubusmsg.h.
const (
	MsgHello MsgType = iota
	MsgStatus
	MsgData
	MsgPing
	MsgLookup
	MsgInvoke
	MsgAddObject
	MsgRemoveObject
	MsgSubscribe
	MsgUnsubscribe
	MsgNotify
	MsgMonitor
	msgLast
)

var msgNames = [...]string{"HELLO", "STATUS", "DATA", "PING", "LOOKUP", "INVOKE", "ADD_OBJECT",
	"REMOVE_OBJECT", "SUBSCRIBE", "UNSUBSCRIBE", "NOTIFY", "MONITOR"}

func (t MsgType) String() string {
	if int(t) < len(msgNames) {
		return msgNames[t]
	}
	return fmt.Sprintf("MSG(%d)", uint8(t))
}

// AttrID identifies a message attribute (enum ubus_msg_attr).
type AttrID uint8

// Message attributes, numbered as in ubusmsg.h.
const (
	AttrUnspec AttrID = iota
	AttrStatus
	AttrObjPath
	AttrObjID
	AttrMethod
	AttrObjType
	AttrSignature
	AttrData
	AttrTarget
	AttrActive
	AttrNoReply
	AttrSubscribers
	AttrUser
	AttrGroup
	attrMax
)

var attrNames = [...]string{"UNSPEC", "STATUS", "OBJPATH", "OBJID", "METHOD", "OBJTYPE", "SIGNATURE",
	"DATA", "TARGET", "ACTIVE", "NO_REPLY", "SUBSCRIBERS", "USER", "GROUP"}

func (a AttrID) String() string {
	if int(a) < len(attrNames) {
		return attrNames[a]
	}
	return fmt.Sprintf("ATTR(%d)", uint8(a))
}

// attrKind is how a message attribute's payload is typed (the ubus_policy
// tables of libubus-io.c and ubusd_proto.c, joined).
type attrKind uint8

const (
	kindRaw    attrKind = iota // unknown: kept as []byte
	kindU32                    // BLOB_ATTR_INT32 -> uint32
	kindString                 // BLOB_ATTR_STRING -> string
	kindBool                   // BLOB_ATTR_INT8 -> bool
	kindTable                  // blobmsg list -> Table
	kindIDList                 // nested plain INT32 attributes -> []uint32
)

var attrKinds = [attrMax]attrKind{
	AttrStatus:      kindU32,
	AttrObjPath:     kindString,
	AttrObjID:       kindU32,
	AttrMethod:      kindString,
	AttrObjType:     kindU32,
	AttrSignature:   kindTable,
	AttrData:        kindTable,
	AttrTarget:      kindU32,
	AttrActive:      kindBool,
	AttrNoReply:     kindBool,
	AttrSubscribers: kindIDList,
	AttrUser:        kindString,
	AttrGroup:       kindString,
}

func kindOf(id AttrID) attrKind {
	if id < attrMax {
		return attrKinds[id]
	}
	return kindRaw
}

// Attr is one message attribute. Value's Go type follows the attribute:
// uint32 for STATUS, OBJID, OBJTYPE, TARGET; string for OBJPATH, METHOD,
// USER, GROUP; bool for ACTIVE, NO_REPLY; Table for DATA and SIGNATURE;
// []uint32 for SUBSCRIBERS; []byte for anything else.
type Attr struct {
	ID    AttrID
	Value any
}

// Message is one ubus message: header fields and attributes in wire order.
type Message struct {
	Type  MsgType
	Seq   uint16
	Peer  uint32
	Attrs []Attr
}

// Get returns the last attribute with the given id (blob_parse keeps the
// last one).
func (m *Message) Get(id AttrID) (any, bool) {
	for i := len(m.Attrs) - 1; i >= 0; i-- {
		if m.Attrs[i].ID == id {
			return m.Attrs[i].Value, true
		}
	}
	return nil, false
}

// U32 returns an integer attribute.
func (m *Message) U32(id AttrID) (uint32, bool) {
	v, ok := m.Get(id)
	n, ok2 := v.(uint32)
	return n, ok && ok2
}

// Str returns a string attribute.
func (m *Message) Str(id AttrID) (string, bool) {
	v, ok := m.Get(id)
	s, ok2 := v.(string)
	return s, ok && ok2
}

// Bool returns an INT8 attribute.
func (m *Message) Bool(id AttrID) bool {
	v, _ := m.Get(id)
	b, _ := v.(bool)
	return b
}

// Table returns a DATA or SIGNATURE attribute.
func (m *Message) Table(id AttrID) (Table, bool) {
	v, ok := m.Get(id)
	t, ok2 := v.(Table)
	return t, ok && ok2
}

// Status returns the STATUS attribute as a Status (and whether it is there).
func (m *Message) Status() (Status, bool) {
	n, ok := m.U32(AttrStatus)
	return Status(int32(n)), ok
}

func (m *Message) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s seq=%d peer=%08x", m.Type, m.Seq, m.Peer)
	for _, a := range m.Attrs {
		fmt.Fprintf(&b, " %s=", a.ID)
		switch v := a.Value.(type) {
		case Table:
			js, _ := FormatJSON(v, false)
			b.Write(js)
		case uint32:
			fmt.Fprintf(&b, "%d", v)
		default:
			fmt.Fprintf(&b, "%v", v)
		}
	}
	return b.String()
}

// Marshal encodes m: the 8-byte header and the attribute blob.
func (m *Message) Marshal() ([]byte, error) {
	e := encoder{buf: make([]byte, HeaderLen, 64)}
	e.buf[0] = 0 // version
	e.buf[1] = byte(m.Type)
	binary.BigEndian.PutUint16(e.buf[2:], m.Seq)
	binary.BigEndian.PutUint32(e.buf[4:], m.Peer)
	outer := e.begin(0, false)
	for _, a := range m.Attrs {
		if err := e.attr(a); err != nil {
			return nil, fmt.Errorf("%s: attribute %s: %w", m.Type, a.ID, err)
		}
	}
	if err := e.end(outer); err != nil {
		return nil, fmt.Errorf("%s: %w", m.Type, err)
	}
	if n := len(e.buf) - HeaderLen; n > MaxMsgLen {
		return nil, fmt.Errorf("%s: message of %d bytes exceeds the ubus limit of %d", m.Type, n, MaxMsgLen)
	}
	return e.buf, nil
}

func (e *encoder) attr(a Attr) error {
	off := e.begin(uint8(a.ID), false)
	kind := kindOf(a.ID)
	switch v := a.Value.(type) {
	case uint32:
		if kind != kindU32 {
			return fmt.Errorf("uint32 value for a %s attribute", a.ID)
		}
		e.buf = binary.BigEndian.AppendUint32(e.buf, v)
	case string:
		if kind != kindString {
			return fmt.Errorf("string value for a %s attribute", a.ID)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("string contains a NUL byte")
		}
		e.buf = append(e.buf, v...)
		e.buf = append(e.buf, 0)
	case bool:
		if kind != kindBool {
			return fmt.Errorf("bool value for a %s attribute", a.ID)
		}
		var b byte
		if v {
			b = 1
		}
		e.buf = append(e.buf, b)
	case Table:
		if kind != kindTable {
			return fmt.Errorf("table value for a %s attribute", a.ID)
		}
		if err := e.fields(v, 0); err != nil {
			return err
		}
	case []uint32:
		if kind != kindIDList {
			return fmt.Errorf("id list for a %s attribute", a.ID)
		}
		for _, id := range v {
			o := e.begin(0, false)
			e.buf = binary.BigEndian.AppendUint32(e.buf, id)
			if err := e.end(o); err != nil {
				return err
			}
		}
	case []byte:
		if kind != kindRaw {
			return fmt.Errorf("raw bytes for a %s attribute", a.ID)
		}
		e.buf = append(e.buf, v...)
	case nil:
		// An empty attribute: ubus_put_data(NULL) sends an empty DATA.
		if kind != kindTable && kind != kindRaw {
			return fmt.Errorf("no value for a %s attribute", a.ID)
		}
	default:
		return fmt.Errorf("unsupported value %T", a.Value)
	}
	return e.end(off)
}

// Header is the decoded fixed header plus the raw length of the attribute
// blob that follows it.
type header struct {
	typ     MsgType
	seq     uint16
	peer    uint32
	blobLen int // raw length of the attribute blob, its header included
}

// parseHeader validates the 12 bytes that start every message, as
// ubus_validate_hdr and ubusd's client_cb do.
func parseHeader(b []byte) (header, error) {
	if b[0] != 0 {
		return header{}, fmt.Errorf("ubus message version %d, want 0", b[0])
	}
	raw := int(binary.BigEndian.Uint32(b[HeaderLen:]) & blobLenMask)
	if raw < blobHdrLen {
		return header{}, fmt.Errorf("ubus message blob length %d is shorter than its header", raw)
	}
	if pad4(raw) > MaxMsgLen {
		return header{}, fmt.Errorf("ubus message of %d bytes exceeds the limit of %d", raw, MaxMsgLen)
	}
	return header{
		typ:     MsgType(b[1]),
		seq:     binary.BigEndian.Uint16(b[2:]),
		peer:    binary.BigEndian.Uint32(b[4:]),
		blobLen: raw,
	}, nil
}

// ErrTooShort is returned by ParseMessage when the buffer ends early.
var ErrTooShort = errors.New("ubus message truncated")

// ParseMessage decodes exactly one message that fills b.
func ParseMessage(b []byte) (*Message, error) {
	if len(b) < HeaderLen+blobHdrLen {
		return nil, fmt.Errorf("%w: %d bytes, the header alone is %d", ErrTooShort, len(b), HeaderLen+blobHdrLen)
	}
	h, err := parseHeader(b)
	if err != nil {
		return nil, err
	}
	if HeaderLen+h.blobLen != len(b) {
		if HeaderLen+h.blobLen > len(b) {
			return nil, fmt.Errorf("%w: header announces %d bytes, have %d", ErrTooShort, HeaderLen+h.blobLen, len(b))
		}
		return nil, fmt.Errorf("ubus message: %d bytes after the announced length %d", len(b)-HeaderLen-h.blobLen, HeaderLen+h.blobLen)
	}
	return decodeBody(h, b[HeaderLen+blobHdrLen:])
}

// ReadFrame reads the raw bytes of one message (header included) from r, a
// stream socket, after checking its header as ubusd does.
func ReadFrame(r io.Reader) ([]byte, error) { return readFrame(r, 0) }

// MaxInvokeLen bounds the INVOKE messages a connection decodes: none of the
// methods an object here publishes takes more than a few hundred bytes of
// arguments, and a megabyte message decoded into tens of thousands of fields
// costs megabytes of memory per concurrent call. A longer one is skipped
// unread (a *MalformedError wrapping ErrInvokeTooLong); its caller times out.
const MaxInvokeLen = 64 << 10

// ErrInvokeTooLong: an INVOKE message over MaxInvokeLen was skipped.
var ErrInvokeTooLong = errors.New("ubus invoke message too long")

// readFrame is ReadFrame; with maxInvoke > 0 an INVOKE message longer than
// that is discarded without being buffered.
func readFrame(r io.Reader, maxInvoke int) ([]byte, error) {
	var hb [HeaderLen + blobHdrLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, err
	}
	h, err := parseHeader(hb[:])
	if err != nil {
		return nil, err
	}
	if maxInvoke > 0 && h.typ == MsgInvoke && HeaderLen+h.blobLen > maxInvoke {
		if _, err := io.CopyN(io.Discard, r, int64(HeaderLen+h.blobLen-len(hb))); err != nil {
			return nil, fmt.Errorf("skip ubus %s body of %d bytes: %w", h.typ, h.blobLen-blobHdrLen, err)
		}
		return nil, &MalformedError{h.typ, fmt.Errorf("%w: %d bytes (at most %d), seq %d from peer %08x", ErrInvokeTooLong, HeaderLen+h.blobLen, maxInvoke, h.seq, h.peer)}
	}
	frame := make([]byte, HeaderLen+h.blobLen)
	copy(frame, hb[:])
	if _, err := io.ReadFull(r, frame[len(hb):]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read ubus %s body of %d bytes: %w", h.typ, h.blobLen-blobHdrLen, err)
	}
	return frame, nil
}

// ReadMessage reads and decodes one message from r. A *MalformedError means
// the message was skipped but the stream is still in step.
func ReadMessage(r io.Reader) (*Message, error) {
	frame, err := ReadFrame(r)
	if err != nil {
		return nil, err
	}
	return ParseMessage(frame)
}

// MalformedError reports a message whose framing was sound but whose
// attributes were not: a reader may skip it and go on with the next one.
type MalformedError struct {
	Type MsgType
	Err  error
}

func (e *MalformedError) Error() string { return e.Err.Error() }
func (e *MalformedError) Unwrap() error { return e.Err }

func decodeBody(h header, body []byte) (*Message, error) {
	m, err := decodeAttrs(h, body)
	if err != nil {
		return nil, &MalformedError{h.typ, err}
	}
	return m, nil
}

func decodeAttrs(h header, body []byte) (*Message, error) {
	m := &Message{Type: h.typ, Seq: h.seq, Peer: h.peer}
	for off := 0; off < len(body); {
		a, err := cutAttr(body[off:])
		if err != nil {
			return nil, fmt.Errorf("ubus %s: attribute at offset %d: %w", h.typ, off, err)
		}
		id := AttrID(a.id)
		if a.extended {
			return nil, fmt.Errorf("ubus %s: attribute %s has the blobmsg extended bit", h.typ, id)
		}
		v, err := decodeAttr(id, a.payload)
		if err != nil {
			return nil, fmt.Errorf("ubus %s: attribute %s: %w", h.typ, id, err)
		}
		m.Attrs = append(m.Attrs, Attr{id, v})
		off += a.next
	}
	return m, nil
}

func decodeAttr(id AttrID, p []byte) (any, error) {
	switch kindOf(id) {
	case kindU32:
		if len(p) != 4 {
			return nil, fmt.Errorf("int32 of %d bytes", len(p))
		}
		return binary.BigEndian.Uint32(p), nil
	case kindString:
		v, err := decodeValue(TypeString, p, 0)
		if err != nil {
			return nil, err
		}
		return v, nil
	case kindBool:
		if len(p) != 1 {
			return nil, fmt.Errorf("int8 of %d bytes", len(p))
		}
		return p[0] != 0, nil
	case kindTable:
		return UnmarshalTable(p)
	case kindIDList:
		ids := []uint32{}
		for off := 0; off < len(p); {
			a, err := cutAttr(p[off:])
			if err != nil {
				return nil, fmt.Errorf("at offset %d: %w", off, err)
			}
			if len(a.payload) != 4 {
				return nil, fmt.Errorf("at offset %d: id of %d bytes", off, len(a.payload))
			}
			ids = append(ids, binary.BigEndian.Uint32(a.payload))
			off += a.next
		}
		return ids, nil
	}
	return append([]byte{}, p...), nil
}

// Status is a ubus status code (enum ubus_msg_status). A non-zero Status is
// an error; handlers return one to answer with that code.
type Status int32

// Status codes, numbered as in ubusmsg.h.
const (
	StatusOK Status = iota
	StatusInvalidCommand
	StatusInvalidArgument
	StatusMethodNotFound
	StatusNotFound
	StatusNoData
	StatusPermissionDenied
	StatusTimeout
	StatusNotSupported
	StatusUnknownError
	StatusConnectionFailed
	StatusNoMemory
	StatusParseError
	StatusSystemError
)

// The texts of ubus_strerror.
var statusText = [...]string{"Success", "Invalid command", "Invalid argument", "Method not found",
	"Not found", "No response", "Permission denied", "Request timed out", "Operation not supported",
	"Unknown error", "Connection failed", "Out of memory", "Parsing message data failed", "System error"}

func (s Status) Error() string {
	if s >= 0 && int(s) < len(statusText) {
		return statusText[s]
	}
	return fmt.Sprintf("Unknown error: %d", int32(s))
}

// StatusOf maps an error to the status code sent on the wire: a Status (also
// wrapped) keeps its code, nil is OK, anything else UNKNOWN_ERROR.
func StatusOf(err error) Status {
	if err == nil {
		return StatusOK
	}
	var s Status
	if errors.As(err, &s) {
		return s
	}
	return StatusUnknownError
}
