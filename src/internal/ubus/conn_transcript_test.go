package ubus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// playUbusd plays ubusd's side of one transcript connection against our
// Conn: it writes the captured s>c messages and checks that the client's
// messages are exactly the captured c>s bytes, in order.
func playUbusd(t *testing.T, lines []transcriptLine, conn int, client func(c *Conn) error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ubus.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	peerErr := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			peerErr <- err
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
		for _, l := range lines {
			if l.Conn != conn {
				continue
			}
			if l.Dir == "s>c" {
				if _, err := nc.Write(l.Bytes); err != nil {
					peerErr <- fmt.Errorf("line %d: write: %w", l.N, err)
					return
				}
				continue
			}
			got, err := ReadFrame(nc)
			if err != nil {
				peerErr <- fmt.Errorf("line %d: want %s from the client: %w", l.N, l.Type, err)
				return
			}
			if !bytes.Equal(got, l.Bytes) {
				gm, _ := ParseMessage(got)
				peerErr <- fmt.Errorf("line %d (%s):\n got %x (%s)\nwant %x", l.N, l.Type, got, dump(gm), l.Bytes)
				return
			}
		}
		peerErr <- nil
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	clientErr := make(chan error, 1)
	go func() { clientErr <- client(c) }()
	if err := <-peerErr; err != nil {
		t.Fatal(err)
	}
	if err := <-clientErr; err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t *testing.T, s string) Table {
	t.Helper()
	tbl, err := FromJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// The example server of openwrt/ubus (conn 1): publishes "test" with its
// signature, registers an anonymous subscriber object, answers calls.
func TestConnTranscriptServer(t *testing.T) {
	lines := loadTranscript(t)
	answered := make(chan string, 10)
	hello := func(ctx context.Context, req *Request) (Table, error) {
		msg, ok := req.Args.String("msg")
		if !ok {
			msg = "(unknown)"
		}
		answered <- req.Method + " " + req.User
		return Table{{"message", "test received a message: " + msg}}, nil
	}
	count := func(ctx context.Context, req *Request) (Table, error) {
		answered <- req.Method
		return Table{{"rc", int32(49)}}, nil
	}
	obj := &Object{Name: "test", Methods: []Method{
		{Name: "hello", Args: []Arg{{"id", TypeInt32}, {"msg", TypeString}}, Handler: hello},
		{Name: "watch", Args: []Arg{{"id", TypeInt32}, {"counter", TypeInt32}}, Handler: hello},
		{Name: "count", Args: []Arg{{"to", TypeInt32}, {"string", TypeString}}, Handler: count},
	}}
	playUbusd(t, lines, 1, func(c *Conn) error {
		ctx := context.Background()
		id, err := c.AddObject(ctx, obj)
		if err != nil {
			return err
		}
		if id != 71058808 {
			return fmt.Errorf("object id %d", id)
		}
		// libubus' ubus_register_subscriber: an anonymous object.
		if _, err := c.addObject(ctx, nil, &localObject{kind: objSubscriber,
			onNotify: func(string, Table) {}}); err != nil {
			return err
		}
		// The peer now sends the forwarded invokes and checks our replies.
		return nil
	})
	close(answered)
	var got []string
	for a := range answered {
		got = append(got, a)
	}
	want := []string{"hello root", "count", "hello root", "hello root"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("handled %q, want %q", got, want)
	}
}

func TestConnTranscriptList(t *testing.T) {
	lines := loadTranscript(t)
	var all, one []ObjectInfo
	playUbusd(t, lines, 2, func(c *Conn) (err error) {
		all, err = c.Lookup(context.Background(), "")
		return err
	})
	playUbusd(t, lines, 3, func(c *Conn) (err error) {
		one, err = c.Lookup(context.Background(), "test")
		return err
	})
	want := []ObjectInfo{{Path: "test", ID: 71058808, TypeID: 3615933539, Signature: Table{
		{"hello", Table{{"id", int32(5)}, {"msg", int32(3)}}},
		{"watch", Table{{"id", int32(5)}, {"counter", int32(5)}}},
		{"count", Table{{"to", int32(5)}, {"string", int32(3)}}},
	}}}
	if !reflect.DeepEqual(all, want) || !reflect.DeepEqual(one, want) {
		t.Errorf("lookup:\n all %#v\n one %#v\nwant %#v", all, one, want)
	}
}

func TestConnTranscriptCalls(t *testing.T) {
	lines := loadTranscript(t)
	cases := []struct {
		conn      int
		obj, meth string
		args      string
		want      Table
		wantErr   error
	}{
		{4, "test", "hello", `{"id":1,"msg":"hi there"}`, Table{{"message", "test received a message: hi there"}}, nil},
		{5, "test", "nosuch", `{}`, nil, StatusMethodNotFound},
		{6, "test", "count", `{"to":3,"string":"a b c"}`, Table{{"rc", int32(49)}}, nil},
		{7, "test", "hello", `{"id":"x"}`, Table{{"message", "test received a message: (unknown)"}}, nil},
		{8, "nosuchobj", "m", `{}`, nil, StatusNotFound},
		{12, "test", "hello", `{"id":2147483647,"msg":"types","extra":{"list":[true,false,"s",-1,9999999999,2.25]}}`,
			Table{{"message", "test received a message: types"}}, nil},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint("conn", tc.conn), func(t *testing.T) {
			playUbusd(t, lines, tc.conn, func(c *Conn) error {
				got, err := c.Call(context.Background(), tc.obj, tc.meth, mustJSON(t, tc.args))
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						return fmt.Errorf("error %v, want %v", err, tc.wantErr)
					}
					return nil
				}
				if err != nil {
					return err
				}
				if !reflect.DeepEqual(got, tc.want) {
					return fmt.Errorf("got %#v, want %#v", got, tc.want)
				}
				return nil
			})
		})
	}
}

func TestConnTranscriptEvents(t *testing.T) {
	lines := loadTranscript(t)
	type event struct {
		name string
		data Table
	}
	events := make(chan event, 4)
	playUbusd(t, lines, 9, func(c *Conn) error {
		return c.Listen(context.Background(), func(name string, data Table) {
			events <- event{name, data}
		}, "foo*")
	})
	select {
	case ev := <-events:
		want := mustJSON(t, `{"a":1,"b":"two","c":true,"d":[1,2,3],"e":{"f":-5},"g":1.5,"h":12345678901}`)
		if ev.name != "foo.bar" || !reflect.DeepEqual(ev.data, want) {
			t.Errorf("event %s %#v", ev.name, ev.data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event delivered")
	}
	playUbusd(t, lines, 10, func(c *Conn) error {
		return c.Send(context.Background(), "foo.bar",
			mustJSON(t, `{"a":1,"b":"two","c":true,"d":[1,2,3],"e":{"f":-5},"g":1.5,"h":12345678901}`))
	})
	playUbusd(t, lines, 11, func(c *Conn) error {
		return c.Send(context.Background(), "other.evt", mustJSON(t, `{"x":1}`))
	})
}
