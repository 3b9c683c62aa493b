package ubus_test

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// transcriptIDs lists the ids the stock ubusd handed out, in the order it
// allocated them: client ids (HELLO), then per ADD_OBJECT the type id (if
// a signature came with it) before the object id.
func transcriptIDs(lines []ubus.TranscriptLine) []uint32 {
	var ids []uint32
	for _, l := range lines {
		if l.Dir != "s>c" {
			continue
		}
		m, err := ubus.ParseMessage(l.Bytes)
		if err != nil {
			continue
		}
		switch {
		case m.Type == ubus.MsgHello:
			ids = append(ids, m.Peer)
		case m.Type == ubus.MsgData && len(m.Attrs) <= 2 && m.Attrs[0].ID == ubus.AttrObjID:
			_, hasPath := m.Get(ubus.AttrObjPath)
			_, hasData := m.Get(ubus.AttrData)
			if hasPath || hasData {
				continue // a LOOKUP answer or a relayed reply
			}
			if tid, ok := m.U32(ubus.AttrObjType); ok {
				ids = append(ids, tid)
			}
			id, _ := m.U32(ubus.AttrObjID)
			ids = append(ids, id)
		}
	}
	return ids
}

// TestUbusdTranscript: the Go ubusd answers the captured client messages
// with exactly the bytes the stock ubusd sent, on every connection.
func TestUbusdTranscript(t *testing.T) {
	lines := ubus.LoadTranscript(t)
	ids := transcriptIDs(lines)
	next := 0
	srv, err := ubustest.NewServer(filepath.Join(t.TempDir(), "ubus.sock"), &ubustest.Options{
		NewID: func() uint32 {
			if next >= len(ids) {
				t.Errorf("more ids allocated than the transcript has")
				return 0xdead0000 + uint32(next)
			}
			next++
			return ids[next-1]
		},
		Creds: func(uid, gid uint32) (string, string) { return "root", "root" },
		Logf:  t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	conns := map[int]net.Conn{}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, l := range lines {
		c := conns[l.Conn]
		if c == nil {
			if c, err = net.Dial("unix", srv.Path()); err != nil {
				t.Fatal(err)
			}
			conns[l.Conn] = c
		}
		if l.Dir == "c>s" {
			if _, err := c.Write(l.Bytes); err != nil {
				t.Fatalf("line %d: %v", l.N, err)
			}
			continue
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := ubus.ReadFrame(c)
		if err != nil {
			t.Fatalf("line %d: want %s on conn %d: %v", l.N, l.Type, l.Conn, err)
		}
		if !bytes.Equal(got, l.Bytes) {
			gm, _ := ubus.ParseMessage(got)
			t.Fatalf("line %d (conn %d %s):\n got %x\n     %v\nwant %x", l.N, l.Conn, l.Type, got, gm, l.Bytes)
		}
	}
	if next != len(ids) {
		t.Errorf("allocated %d ids, the transcript shows %d", next, len(ids))
	}
	// Nothing more may arrive: "other.evt" must not reach the "foo*"
	// listener, and no reply may be duplicated.
	for n, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if extra, err := ubus.ReadFrame(c); !errors.Is(err, os.ErrDeadlineExceeded) {
			m, _ := ubus.ParseMessage(extra)
			t.Errorf("conn %d: unexpected %v (%v)", n, m, err)
		}
	}
}
