// Package nfqueue is a netfilter queue client (nfnetlink_queue) over a raw
// netlink socket: it binds one queue, configures it (copy mode and range,
// queue length, fail-open, GSO), receives the queued packets with their ids
// and issues verdicts, singly or in batches. Pure Go, no cgo; the wire format
// follows linux/netfilter/nfnetlink_queue.h.
package nfqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Netlink and nfnetlink constants (linux/netlink.h, nfnetlink.h,
// nfnetlink_queue.h).
const (
	nlmsgHdrLen  = 16
	nlattrHdrLen = 4
	nfgenHdrLen  = 4

	nlmsgNoop  = 1
	nlmsgError = 2
	nlmsgDone  = 3

	nlmFRequest = 0x1
	nlmFAck     = 0x4

	subsysQueue = 3

	msgPacket       = 0
	msgVerdict      = 1
	msgConfig       = 2
	msgVerdictBatch = 3

	// NFQA_* packet attributes
	attrPacketHdr  = 1
	attrVerdictHdr = 2
	attrMark       = 3
	attrTimestamp  = 4
	attrIfIndexIn  = 5
	attrIfIndexOut = 6
	attrHWAddr     = 9
	attrPayload    = 10
	attrCapLen     = 13
	attrSkbInfo    = 14

	// NFQA_CFG_* config attributes
	cfgCmd    = 1
	cfgParams = 2
	cfgMaxLen = 3
	cfgMask   = 4
	cfgFlags  = 5

	cmdBind   = 1
	cmdUnbind = 2

	copyPacket = 2

	nlaTypeMask = 0x3fff // without NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

// Config flags (NFQA_CFG_F_*).
const (
	FlagFailOpen  uint32 = 1 << 0
	FlagConntrack uint32 = 1 << 1
	FlagGSO       uint32 = 1 << 2
)

// SKB info bits (NFQA_SKB_*).
const (
	SkbCsumNotReady    uint32 = 1 << 0
	SkbGSO             uint32 = 1 << 1
	SkbCsumNotVerified uint32 = 1 << 2
)

// Verdict is a netfilter verdict.
type Verdict uint32

// Verdicts (linux/netfilter.h).
const (
	Drop   Verdict = 0
	Accept Verdict = 1
	Repeat Verdict = 4
)

// Netfilter hooks (enum nf_inet_hooks).
const (
	HookPreRouting  = 0
	HookLocalIn     = 1
	HookForward     = 2
	HookLocalOut    = 3
	HookPostRouting = 4
)

// Packet is one queued packet. Payload starts at the network header.
type Packet struct {
	ID        uint32
	HWProto   uint16 // EtherType, e.g. 0x0800
	Hook      uint8
	InDev     uint32 // ifindex, 0 if none
	OutDev    uint32
	Mark      uint32
	SkbInfo   uint32
	CapLen    uint32 // original length when Payload was cut to the copy range
	Timestamp time.Time
	Payload   []byte
}

// Errors of the message decoder.
var (
	ErrMalformed = errors.New("malformed netlink message")
)

var native = binary.NativeEndian

// message builds one netlink message of the queue subsystem: header,
// nfgenmsg for queue num, then the attributes.
type message struct {
	b []byte
}

func newMessage(typ uint16, flags uint16, seq uint32, queue uint16) *message {
	m := &message{b: make([]byte, nlmsgHdrLen+nfgenHdrLen, 64)}
	native.PutUint16(m.b[4:], subsysQueue<<8|typ)
	native.PutUint16(m.b[6:], flags)
	native.PutUint32(m.b[8:], seq)
	// nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id = queue (BE)
	binary.BigEndian.PutUint16(m.b[nlmsgHdrLen+2:], queue)
	return m
}

func (m *message) attr(typ uint16, data []byte) {
	l := nlattrHdrLen + len(data)
	m.b = native.AppendUint16(m.b, uint16(l))
	m.b = native.AppendUint16(m.b, typ)
	m.b = append(m.b, data...)
	for len(m.b)%4 != 0 {
		m.b = append(m.b, 0)
	}
}

func (m *message) bytes() []byte {
	native.PutUint32(m.b[0:], uint32(len(m.b)))
	return m.b
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// configMessage binds (or configures) a queue in one message, so the kernel
// applies command, copy mode, length and flags together: between a bare
// BIND and a later PARAMS the queue would be in copy mode NONE, and packets
// queued then are dropped.
func configMessage(seq uint32, queue uint16, cmd uint8, c Config) []byte {
	m := newMessage(msgConfig, nlmFRequest|nlmFAck, seq, queue)
	if cmd != 0 {
		m.attr(cfgCmd, []byte{cmd, 0, 0, 0})
	}
	if cmd == cmdUnbind {
		return m.bytes()
	}
	params := binary.BigEndian.AppendUint32(nil, c.copyRange())
	m.attr(cfgParams, append(params, copyPacket))
	if c.MaxLen > 0 {
		m.attr(cfgMaxLen, be32(c.MaxLen))
	}
	var flags uint32
	if c.FailOpen {
		flags |= FlagFailOpen
	}
	if c.GSO {
		flags |= FlagGSO
	}
	m.attr(cfgMask, be32(FlagFailOpen|FlagGSO))
	m.attr(cfgFlags, be32(flags))
	return m.bytes()
}

func verdictMessage(queue uint16, id uint32, v Verdict, batch bool) []byte {
	typ := uint16(msgVerdict)
	if batch {
		typ = msgVerdictBatch
	}
	m := newMessage(typ, nlmFRequest, 0, queue)
	hdr := binary.BigEndian.AppendUint32(nil, uint32(v))
	m.attr(attrVerdictHdr, binary.BigEndian.AppendUint32(hdr, id))
	return m.bytes()
}

// item is one decoded netlink message: a queued packet, or an error/ack.
type item struct {
	packet bool
	pkt    Packet
	ack    bool // NLMSG_ERROR
	seq    uint32
	errno  syscall.Errno // 0 for an ACK
}

// parseMessages decodes every netlink message in a datagram. Payload
// slices point into b.
func parseMessages(b []byte, out []item) ([]item, error) {
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return out, fmt.Errorf("netlink header: %d bytes left: %w", len(b), ErrMalformed)
		}
		l := int(native.Uint32(b[0:]))
		typ := native.Uint16(b[4:])
		seq := native.Uint32(b[8:])
		if l < nlmsgHdrLen || l > len(b) {
			return out, fmt.Errorf("netlink length %d of %d bytes: %w", l, len(b), ErrMalformed)
		}
		body := b[nlmsgHdrLen:l]
		if al := align4(l); al < len(b) {
			b = b[al:]
		} else {
			b = nil
		}
		switch {
		case typ == nlmsgError:
			if len(body) < 4 {
				return out, fmt.Errorf("netlink error: %d bytes: %w", len(body), ErrMalformed)
			}
			code := int32(native.Uint32(body))
			out = append(out, item{ack: true, seq: seq, errno: syscall.Errno(-code)})
		case typ == nlmsgNoop || typ == nlmsgDone:
		case typ == subsysQueue<<8|msgPacket:
			p, err := parsePacket(body)
			if err != nil {
				return out, err
			}
			out = append(out, item{packet: true, pkt: p})
		default:
			// Not ours (other subsystems do not talk on this socket).
		}
	}
	return out, nil
}

// minLen is the size of an attribute's fixed value.
func minLen(typ uint16) int {
	switch typ {
	case attrPacketHdr:
		return 7
	case attrMark, attrIfIndexIn, attrIfIndexOut, attrCapLen, attrSkbInfo:
		return 4
	case attrTimestamp:
		return 16
	}
	return 0
}

func align4(n int) int { return (n + 3) &^ 3 }

func parsePacket(body []byte) (Packet, error) {
	var p Packet
	if len(body) < nfgenHdrLen {
		return p, fmt.Errorf("nfgenmsg: %d bytes: %w", len(body), ErrMalformed)
	}
	b := body[nfgenHdrLen:]
	seen := false
	for len(b) > 0 {
		if len(b) < nlattrHdrLen {
			return p, fmt.Errorf("attribute header: %d bytes: %w", len(b), ErrMalformed)
		}
		l := int(native.Uint16(b[0:]))
		typ := native.Uint16(b[2:]) & nlaTypeMask
		if l < nlattrHdrLen || l > len(b) {
			return p, fmt.Errorf("attribute %d length %d of %d bytes: %w", typ, l, len(b), ErrMalformed)
		}
		v := b[nlattrHdrLen:l]
		if al := align4(l); al < len(b) {
			b = b[al:]
		} else {
			b = nil
		}
		if need := minLen(typ); len(v) < need {
			return p, fmt.Errorf("attribute %d: %d bytes, need %d: %w", typ, len(v), minLen(typ), ErrMalformed)
		}
		switch typ {
		case attrPacketHdr:
			p.ID = binary.BigEndian.Uint32(v)
			p.HWProto = binary.BigEndian.Uint16(v[4:])
			p.Hook = v[6]
			seen = true
		case attrMark:
			p.Mark = binary.BigEndian.Uint32(v)
		case attrIfIndexIn:
			p.InDev = binary.BigEndian.Uint32(v)
		case attrIfIndexOut:
			p.OutDev = binary.BigEndian.Uint32(v)
		case attrCapLen:
			p.CapLen = binary.BigEndian.Uint32(v)
		case attrSkbInfo:
			p.SkbInfo = binary.BigEndian.Uint32(v)
		case attrTimestamp:
			sec := int64(binary.BigEndian.Uint64(v))
			usec := int64(binary.BigEndian.Uint64(v[8:]))
			p.Timestamp = time.Unix(sec, usec*1000)
		case attrPayload:
			p.Payload = v
		}
	}
	if !seen {
		return p, fmt.Errorf("queued packet without packet header: %w", ErrMalformed)
	}
	return p, nil
}
