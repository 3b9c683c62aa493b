package ubus_test

import (
	"bytes"
	"net"
	"path/filepath"
	"testing"

	"github.com/afero/af-conn/internal/ubus"
)

// ubusd may forward an INVOKE for a new object right behind the DATA that told its id, in
// the same read. The object must be known by then (libubus records it while reading that
// DATA); otherwise the call is answered NOT_FOUND for object 0, which ubusd drops, and the
// caller waits for ever. This scripted ubusd sends all three messages in one write.
func TestInvokeRightAfterAddObject(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ubus.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const objID, callerID = 0x1234, 0x5678
	result := make(chan *ubus.Message, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		write := func(ms ...*ubus.Message) {
			var all bytes.Buffer
			for _, m := range ms {
				b, err := m.Marshal()
				if err != nil {
					t.Error(err)
					return
				}
				all.Write(b)
			}
			nc.Write(all.Bytes())
		}
		write(&ubus.Message{Type: ubus.MsgHello, Peer: 0x9999})
		add, err := ubus.ReadMessage(nc)
		if err != nil || add.Type != ubus.MsgAddObject {
			t.Errorf("want ADD_OBJECT, got %v %v", add, err)
			return
		}
		write(
			&ubus.Message{Type: ubus.MsgData, Seq: add.Seq, Attrs: []ubus.Attr{{ID: ubus.AttrObjID, Value: uint32(objID)}, {ID: ubus.AttrObjType, Value: uint32(0x4321)}}},
			&ubus.Message{Type: ubus.MsgStatus, Seq: add.Seq, Attrs: []ubus.Attr{{ID: ubus.AttrStatus, Value: uint32(0)}}},
			&ubus.Message{Type: ubus.MsgInvoke, Seq: 7, Peer: callerID, Attrs: []ubus.Attr{{ID: ubus.AttrObjID, Value: uint32(objID)},
				{ID: ubus.AttrMethod, Value: "fail"}, {ID: ubus.AttrData, Value: ubus.Table{}}}},
		)
		for {
			m, err := ubus.ReadMessage(nc)
			if err != nil {
				return
			}
			if m.Type == ubus.MsgStatus && m.Seq == 7 {
				result <- m
				return
			}
		}
	}()
	c := dial(t, sock)
	if _, err := c.AddObject(tctx(t), echoObject("connmgr.order")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-result:
		id, _ := m.U32(ubus.AttrObjID)
		st, _ := m.Status()
		if id != objID || st != ubus.StatusPermissionDenied {
			t.Errorf("reply to the early INVOKE: object %#x status %v; want %#x and the handler's Permission denied", id, st, objID)
		}
	case <-tctx(t).Done():
		t.Fatal("no reply to the INVOKE")
	}
}
