package ubus

import (
	"context"
	"fmt"
)

// Arg is one argument of a method signature: its name and blobmsg type, as
// `ubus -v list` shows them.
type Arg struct {
	Name string
	Type Type
}

// Request is one call of a method of a published object.
type Request struct {
	Object string // path of the object called
	Method string
	Args   Table  // the DATA table (empty when the caller sent none)
	User   string // caller's user and group as ubusd reports them (may be empty)
	Group  string
	Peer   uint32 // caller's client id
}

// MethodHandler answers a call. A non-nil Table is sent as the reply's DATA;
// the error decides the status: nil is OK, a Status its code, anything else
// UNKNOWN_ERROR. ctx ends when the connection does.
type MethodHandler func(ctx context.Context, req *Request) (Table, error)

// Method is one method of an Object.
type Method struct {
	Name    string
	Args    []Arg
	Handler MethodHandler
}

// Object is a ubus object to publish under Name. The same Object may be
// added to successive connections (Client does so after a reconnect).
type Object struct {
	Name    string
	Methods []Method
	// OnSubscribers, when set, is told whether the object has subscribers
	// each time ubusd reports a change (on the connection's event goroutine).
	OnSubscribers func(active bool)
}

// signature is the SIGNATURE attribute of ADD_OBJECT: one table per method
// with one INT32 per argument holding its type (ubus_push_method_data).
func (o *Object) signature() (Table, error) {
	sig := make(Table, 0, len(o.Methods))
	seen := map[string]bool{}
	for _, m := range o.Methods {
		if m.Name == "" {
			return nil, fmt.Errorf("object %q: method without a name", o.Name)
		}
		if seen[m.Name] {
			return nil, fmt.Errorf("object %q: method %q twice", o.Name, m.Name)
		}
		if m.Handler == nil {
			return nil, fmt.Errorf("object %q: method %q has no handler", o.Name, m.Name)
		}
		seen[m.Name] = true
		args := make(Table, 0, len(m.Args))
		for _, a := range m.Args {
			if a.Type > typeLast {
				return nil, fmt.Errorf("object %q: method %q: argument %q has unknown type %d", o.Name, m.Name, a.Name, a.Type)
			}
			args = append(args, Field{a.Name, int32(a.Type)})
		}
		sig = append(sig, Field{m.Name, args})
	}
	return sig, nil
}

func (o *Object) method(name string) *Method {
	for i := range o.Methods {
		if o.Methods[i].Name == name {
			return &o.Methods[i]
		}
	}
	return nil
}

// ObjectInfo is one object as LOOKUP reports it.
type ObjectInfo struct {
	Path      string
	ID        uint32
	TypeID    uint32
	Signature Table // method name -> Table of argument name -> int32 type
}

// EventHandler receives one event: its name and data. Handlers of one
// connection run one at a time, in the order ubusd sent the events.
type EventHandler func(event string, data Table)
