// Package ipset is a small client of the kernel's ip set subsystem over
// nfnetlink (what the ipset tool speaks), enough for connmgr's iptables
// backend: create, destroy, flush, add and delete entries with timeouts and
// comments, list a set. Adding or deleting any number of entries is one
// netlink message (IPSET_ATTR_ADT), so no process is ever forked per address.
package ipset

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Protocol numbers from include/uapi/linux/netfilter/ipset/ip_set.h.
const (
	protocol = 6 // IPSET_PROTOCOL_MIN: every kernel with ipset speaks it

	cmdProtocol = 1
	cmdCreate   = 2
	cmdDestroy  = 3
	cmdFlush    = 4
	cmdSwap     = 6
	cmdList     = 7
	cmdAdd      = 9
	cmdDel      = 10
	cmdTest     = 11

	attrProtocol = 1
	attrSetName  = 2
	attrTypeName = 3
	attrRevision = 4
	attrFamily   = 5
	attrFlags    = 6
	attrData     = 7
	attrADT      = 8
	attrLineno   = 9

	attrIP         = 1
	attrCIDR       = 3
	attrTimeout    = 6
	attrCadtFlags  = 8
	attrHashSize   = 18
	attrMaxElem    = 19
	attrElements   = 24
	attrReferences = 25
	attrMemSize    = 26
	attrComment    = 26 // in entry data (ADT attribute space)

	attrIPv4 = 1
	attrIPv6 = 2

	flagListHeader  = 1 << 2
	flagWithComment = 1 << 4

	nlaNetByteOrder = 1 << 14

	errPrivate  = 4096
	errExist    = 4103
	errHashFull = 4352
)

// requestTimeout bounds the wait for the kernel's answer.
const requestTimeout = 5 * time.Second

// Errors callers test with errors.Is.
var (
	ErrFull     = errors.New("set is full")
	ErrNotFound = errors.New("set does not exist")
	ErrExist    = errors.New("element or set already exists")
	ErrBusy     = errors.New("set is in use by a rule")
)

// Error is an ipset error code the kernel returned.
type Error struct {
	Op   string
	Set  string
	Code syscall.Errno
}

func (e *Error) Error() string {
	return fmt.Sprintf("ipset %s %s: %s", e.Op, e.Set, codeText(e.Code))
}

// Is maps codes to the package's sentinel errors.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrFull:
		return e.Code == errHashFull
	case ErrNotFound:
		return e.Code == unix.ENOENT
	case ErrExist:
		return e.Code == errExist || e.Code == unix.EEXIST
	case ErrBusy:
		return e.Code == unix.EBUSY || e.Code == errPrivate+4 // IPSET_ERR_BUSY
	}
	return false
}

func (e *Error) Unwrap() error {
	if e.Code < errPrivate {
		return e.Code
	}
	return nil
}

var codeTexts = map[syscall.Errno]string{
	errPrivate + 1:  "kernel does not speak this ipset protocol",
	errPrivate + 2:  "set type not supported by the kernel",
	errPrivate + 3:  "too many sets",
	errPrivate + 4:  "set is in use",
	errPrivate + 5:  "second set does not exist",
	errPrivate + 6:  "set type mismatch",
	errExist:        "element or set already exists (or does not exist)",
	errPrivate + 8:  "invalid CIDR",
	errPrivate + 9:  "invalid netmask",
	errPrivate + 10: "invalid family",
	errPrivate + 11: "set has no timeout support",
	errPrivate + 12: "set is referenced",
	errPrivate + 13: "invalid IPv4 address",
	errPrivate + 14: "invalid IPv6 address",
	errPrivate + 16: "set has no comment support",
	errHashFull:     "set is full (maxelem reached)",
}

func codeText(c syscall.Errno) string {
	if s, ok := codeTexts[c]; ok {
		return s
	}
	if c >= errPrivate {
		return fmt.Sprintf("ipset error %d", int(c))
	}
	return c.Error()
}

// Family of a set's addresses.
type Family uint8

// Families as the kernel numbers them (NFPROTO_*).
const (
	INet  Family = unix.NFPROTO_IPV4
	INet6 Family = unix.NFPROTO_IPV6
)

func (f Family) String() string {
	switch f {
	case INet:
		return "inet"
	case INet6:
		return "inet6"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// CreateOptions describe a new set.
type CreateOptions struct {
	Type    string // "hash:ip" or "hash:net"
	Family  Family
	Timeout bool   // entries may carry timeouts (0 = permanent)
	MaxElem uint32 // 0: kernel default (65536)
	Comment bool   // entries may carry comments
}

// revisions: the lowest type revision that has what we ask for (the kernel
// accepts any revision it knows; these exist since Linux 3.10/4.x).
func revision(typ string, comment bool) uint8 {
	switch {
	case typ == "hash:ip" && comment:
		return 2
	case typ == "hash:ip":
		return 1
	case typ == "hash:net" && comment:
		return 3
	}
	return 2
}

// Entry is one element of a hash:ip or hash:net set.
type Entry struct {
	Addr netip.Addr
	// Bits is the prefix length for hash:net (0: host length).
	Bits int
	// Timeout: 0 means permanent (in sets with timeout support). Rounded
	// up to whole seconds.
	Timeout time.Duration
	Comment string
}

// Set is what List returns.
type Set struct {
	Name       string
	Type       string
	Revision   uint8
	Family     Family
	HashSize   uint32
	MaxElem    uint32
	Elements   uint32 // number of entries (kernel's count)
	References uint32 // rules using the set
	MemSize    uint32
	Timeout    bool
	Entries    []Entry
}

// Conn is a netlink connection to the ipset subsystem.
type Conn struct {
	c *netlink.Conn
}

// Dial opens a connection; nsfd > 0 selects a network namespace.
func Dial(nsfd int) (*Conn, error) {
	cfg := &netlink.Config{}
	if nsfd > 0 {
		cfg.NetNS = nsfd
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("ipset: open netlink: %w", err)
	}
	return &Conn{c: c}, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// request sends one command and returns the replies.
func (c *Conn) request(op, set string, cmd uint16, flags netlink.HeaderFlags, enc *netlink.AttributeEncoder) ([]netlink.Message, error) {
	attrs, err := enc.Encode()
	if err != nil {
		return nil, fmt.Errorf("ipset %s %s: encode: %w", op, set, err)
	}
	// nfgenmsg: family, version, resource id; ipset reads the family from
	// attributes, AF_INET here is what the ipset tool sends.
	data := append([]byte{unix.AF_INET, 0, 0, 0}, attrs...)
	// Commands that answer with data (protocol, list) go without an ack
	// request: the ack would come as a second datagram after the answer and
	// be left in the socket for the next request (and the ipset dump start
	// sends its error itself, doubled with NLM_F_ACK).
	if cmd != cmdList && cmd != cmdProtocol { // NLM_F_EXCL shares its bit with NLM_F_MATCH: test cmd, not flags
		flags |= netlink.Acknowledge
	}
	// A kernel that never answers must not hang the daemon.
	_ = c.c.SetDeadline(time.Now().Add(requestTimeout))
	msgs, err := c.c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_IPSET<<8 | cmd),
			Flags: netlink.Request | flags,
		},
		Data: data,
	})
	if err != nil {
		var oe *netlink.OpError
		if errors.As(err, &oe) {
			var errno syscall.Errno
			if errors.As(oe.Err, &errno) {
				return nil, &Error{Op: op, Set: set, Code: errno}
			}
		}
		return nil, fmt.Errorf("ipset %s %s: %w", op, set, err)
	}
	return msgs, nil
}

func newEncoder(set string) *netlink.AttributeEncoder {
	enc := netlink.NewAttributeEncoder()
	enc.ByteOrder = binary.BigEndian
	enc.Uint8(attrProtocol, protocol)
	if set != "" {
		enc.String(attrSetName, set)
	}
	return enc
}

// Protocol asks the kernel's ipset protocol version (a cheap liveness test).
func (c *Conn) Protocol() (uint8, error) {
	msgs, err := c.request("protocol", "", cmdProtocol, 0, newEncoder(""))
	if err != nil {
		return 0, err
	}
	var v uint8
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("ipset protocol: %w", err)
		}
		for ad.Next() {
			if ad.Type() == attrProtocol {
				v = ad.Uint8()
			}
		}
	}
	return v, nil
}

// Create makes a set; with existOK an existing set of the same type and
// options is not an error.
func (c *Conn) Create(name string, o CreateOptions, existOK bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	if o.Type != "hash:ip" && o.Type != "hash:net" {
		return fmt.Errorf("ipset create %s: unsupported type %q", name, o.Type)
	}
	if o.Family != INet && o.Family != INet6 {
		return fmt.Errorf("ipset create %s: unsupported family %v", name, o.Family)
	}
	enc := newEncoder(name)
	enc.String(attrTypeName, o.Type)
	enc.Uint8(attrRevision, revision(o.Type, o.Comment))
	enc.Uint8(attrFamily, uint8(o.Family))
	enc.Nested(attrData, func(d *netlink.AttributeEncoder) error {
		d.ByteOrder = binary.BigEndian
		if o.Timeout {
			d.Uint32(attrTimeout|nlaNetByteOrder, 0)
		}
		if o.MaxElem > 0 {
			d.Uint32(attrMaxElem|nlaNetByteOrder, o.MaxElem)
		}
		if o.Comment {
			d.Uint32(attrCadtFlags|nlaNetByteOrder, flagWithComment)
		}
		return nil
	})
	var flags netlink.HeaderFlags = netlink.Create
	if !existOK {
		flags |= netlink.Excl
	}
	_, err := c.request("create", name, cmdCreate, flags, enc)
	return err
}

// Destroy removes a set (it must not be referenced by a rule).
func (c *Conn) Destroy(name string) error {
	_, err := c.request("destroy", name, cmdDestroy, 0, newEncoder(name))
	return err
}

// Swap exchanges the contents (and options) of two sets of the same type
// atomically; rules referring to either name see the other's entries.
func (c *Conn) Swap(name, other string) error {
	enc := newEncoder(name)
	enc.String(attrTypeName, other) // IPSET_ATTR_SETNAME2
	_, err := c.request("swap", name+" "+other, cmdSwap, 0, enc)
	return err
}

// Flush removes every entry of a set.
func (c *Conn) Flush(name string) error {
	_, err := c.request("flush", name, cmdFlush, 0, newEncoder(name))
	return err
}

// Add adds entries, in as few messages as fit a netlink attribute (the
// entries of one message are one nested attribute of at most 64 KiB, some
// 700 to 1,300 entries). With existOK an entry that is already
// there is not an error and gets the new timeout (ipset's -exist).
// Entries before a failing one stay added; the error names the failing one.
func (c *Conn) Add(name string, entries []Entry, existOK bool) error {
	return c.adt("add", cmdAdd, name, entries, existOK)
}

// Del deletes entries, in as few messages as fit; with missingOK absent entries are
// not an error.
func (c *Conn) Del(name string, entries []Entry, missingOK bool) error {
	return c.adt("del", cmdDel, name, entries, missingOK)
}

// Test tells whether an entry is in the set.
func (c *Conn) Test(name string, e Entry) (bool, error) {
	enc := newEncoder(name)
	enc.Nested(attrData, func(d *netlink.AttributeEncoder) error { return encodeEntry(d, e, false) })
	_, err := c.request("test", name, cmdTest, 0, enc)
	if errors.Is(err, ErrExist) { // the kernel says "not there" this way
		return false, nil
	}
	return err == nil, err
}

// adtMsgBytes bounds the entries' encoded size in one message, below the
// 64 KiB a netlink attribute can hold.
const adtMsgBytes = 48 << 10

// entryBytes bounds the encoded size of one entry (data, address, prefix,
// timeout, comment and line number attributes with their headers).
func entryBytes(e Entry) int { return 64 + min(len(e.Comment), 255) }

func (c *Conn) adt(op string, cmd uint16, name string, entries []Entry, exist bool) error {
	for len(entries) > 0 {
		n, size := 0, 0
		for n < len(entries) && size+entryBytes(entries[n]) <= adtMsgBytes {
			size += entryBytes(entries[n])
			n++
		}
		if err := c.adtMsg(op, cmd, name, entries[:n], exist); err != nil {
			return err
		}
		entries = entries[n:]
	}
	return nil
}

// adtMsg adds or deletes entries in one message.
func (c *Conn) adtMsg(op string, cmd uint16, name string, entries []Entry, exist bool) error {
	enc := newEncoder(name)
	// The kernel wants a top-level line number with IPSET_ATTR_ADT.
	enc.Uint32(attrLineno|nlaNetByteOrder, 0)
	var encErr error
	enc.Nested(attrADT, func(adt *netlink.AttributeEncoder) error {
		adt.ByteOrder = binary.BigEndian
		for i, e := range entries {
			adt.Nested(attrData, func(d *netlink.AttributeEncoder) error {
				if err := encodeEntry(d, e, cmd == cmdAdd); err != nil { // timeouts and comments only when adding
					encErr = err
					return err
				}
				// 1-based line number: the kernel reports it back for the
				// entry that failed.
				d.Uint32(attrLineno|nlaNetByteOrder, uint32(i+1))
				return nil
			})
		}
		return nil
	})
	if encErr != nil {
		return fmt.Errorf("ipset %s %s: %w", op, name, encErr)
	}
	var flags netlink.HeaderFlags
	if !exist {
		flags = netlink.Excl
	}
	_, err := c.request(op, name, cmd, flags, enc)
	if err != nil && len(entries) > 1 {
		return fmt.Errorf("%w (one of %d entries, first %v)", err, len(entries), entries[0].Addr)
	}
	if err != nil {
		return fmt.Errorf("%w (entry %v)", err, entries[0].Addr)
	}
	return nil
}

func encodeEntry(d *netlink.AttributeEncoder, e Entry, withExt bool) error {
	d.ByteOrder = binary.BigEndian
	if !e.Addr.IsValid() {
		return errors.New("invalid address")
	}
	a := e.Addr.Unmap()
	d.Nested(attrIP, func(ip *netlink.AttributeEncoder) error {
		if a.Is4() {
			ip.Bytes(attrIPv4|nlaNetByteOrder, a.AsSlice())
		} else {
			ip.Bytes(attrIPv6|nlaNetByteOrder, a.AsSlice())
		}
		return nil
	})
	if e.Bits > 0 {
		if e.Bits > a.BitLen() {
			return fmt.Errorf("prefix length %d too long for %v", e.Bits, a)
		}
		d.Uint8(attrCIDR, uint8(e.Bits))
	}
	if !withExt {
		return nil
	}
	if e.Timeout > 0 {
		secs := (e.Timeout + time.Second - 1) / time.Second
		d.Uint32(attrTimeout|nlaNetByteOrder, uint32(min(secs, 2147483)))
	}
	if e.Comment != "" {
		c := e.Comment
		if len(c) > 255 {
			c = c[:255]
		}
		d.String(attrComment, c)
	}
	return nil
}

// checkName enforces the kernel's IPSET_MAXNAMELEN (31 bytes + NUL).
func checkName(name string) error {
	if name == "" || len(name) > 31 {
		return fmt.Errorf("ipset: set name %q must be 1 to 31 bytes", name)
	}
	return nil
}

// List returns a set's header and, unless headerOnly, its entries.
func (c *Conn) List(name string, headerOnly bool) (*Set, error) {
	enc := newEncoder(name)
	if headerOnly {
		enc.Uint32(attrFlags|nlaNetByteOrder, flagListHeader)
	}
	msgs, err := c.request("list", name, cmdList, netlink.Dump, enc)
	if err != nil {
		return nil, err
	}
	s := &Set{}
	for _, m := range msgs {
		if err := parseList(m.Data, s); err != nil {
			return nil, fmt.Errorf("ipset list %s: %w", name, err)
		}
	}
	if s.Name == "" {
		return nil, &Error{Op: "list", Set: name, Code: unix.ENOENT}
	}
	return s, nil
}

// parseList decodes one message of a list dump (nfgenmsg, then attributes)
// into s; a set's entries may come in several messages.
func parseList(b []byte, s *Set) error {
	if len(b) < 4 {
		return fmt.Errorf("message of %d bytes is shorter than its nfgenmsg header", len(b))
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case attrSetName:
			s.Name = ad.String()
		case attrTypeName:
			s.Type = ad.String()
		case attrRevision:
			s.Revision = ad.Uint8()
		case attrFamily:
			s.Family = Family(ad.Uint8())
		case attrData:
			ad.Nested(func(d *netlink.AttributeDecoder) error { return parseHeader(d, s) })
		case attrADT:
			ad.Nested(func(adt *netlink.AttributeDecoder) error {
				adt.ByteOrder = binary.BigEndian
				for adt.Next() {
					if adt.Type() != attrData {
						continue
					}
					var e Entry
					adt.Nested(func(d *netlink.AttributeDecoder) error { return parseEntry(d, &e) })
					if adt.Err() == nil {
						s.Entries = append(s.Entries, e)
					}
				}
				return adt.Err()
			})
		}
	}
	return ad.Err()
}

func parseHeader(d *netlink.AttributeDecoder, s *Set) error {
	d.ByteOrder = binary.BigEndian
	for d.Next() {
		switch d.Type() {
		case attrHashSize:
			s.HashSize = d.Uint32()
		case attrMaxElem:
			s.MaxElem = d.Uint32()
		case attrElements:
			s.Elements = d.Uint32()
		case attrReferences:
			s.References = d.Uint32()
		case attrMemSize:
			s.MemSize = d.Uint32()
		case attrTimeout:
			s.Timeout = true
		}
	}
	return d.Err()
}

func parseEntry(d *netlink.AttributeDecoder, e *Entry) error {
	d.ByteOrder = binary.BigEndian
	for d.Next() {
		switch d.Type() {
		case attrIP:
			d.Nested(func(ip *netlink.AttributeDecoder) error {
				for ip.Next() {
					switch ip.Type() {
					case attrIPv4, attrIPv6:
						a, ok := netip.AddrFromSlice(ip.Bytes())
						if !ok || (ip.Type() == attrIPv4) != a.Is4() {
							return fmt.Errorf("bad address attribute of %d bytes", len(ip.Bytes()))
						}
						e.Addr = a
					}
				}
				return ip.Err()
			})
		case attrCIDR:
			e.Bits = int(d.Uint8())
		case attrTimeout:
			e.Timeout = time.Duration(d.Uint32()) * time.Second
		case attrComment:
			e.Comment = d.String()
		}
	}
	if d.Err() == nil && !e.Addr.IsValid() {
		return errors.New("entry without address")
	}
	return d.Err()
}

// Names lists the names of all sets.
func (c *Conn) Names() ([]string, error) {
	enc := newEncoder("")
	enc.Uint32(attrFlags|nlaNetByteOrder, flagListHeader)
	msgs, err := c.request("list", "(all)", cmdList, netlink.Dump, enc)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range msgs {
		var s Set
		if err := parseList(m.Data, &s); err != nil {
			return nil, fmt.Errorf("ipset list: %w", err)
		}
		if s.Name != "" && (len(names) == 0 || names[len(names)-1] != s.Name) {
			names = append(names, s.Name)
		}
	}
	return names, nil
}
