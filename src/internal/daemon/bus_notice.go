package daemon

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/afero/af-conn/internal/ubus"
)

// Notice names: the ubus events connmgr sends (also the types of the notifications its
// object's subscribers receive).
const (
	NoticeNetwork   = "connmgr.network"
	NoticeInterface = "connmgr.interface"
	NoticeWiFi      = "connmgr.wifi"
)

// sendTimeout bounds one event send to a ubusd that stopped answering.
const sendTimeout = 2 * time.Second

// networkNotice is connmgr.network: the in-use uplink or network type changed. old and new
// are networks (UCI sections, "" for none), the types those of attribute 65008 (-1 none);
// reason says why (the uplink monitor's words, e.g. "failover", "failback", "preference").
func networkNotice(old, new string, oldType, newType int, reason string) Notice {
	return Notice{Name: NoticeNetwork, Data: map[string]any{
		"old": old, "new": new, "old_network_type": oldType, "network_type": newType, "reason": reason,
	}}
}

// interfaceNotice is connmgr.interface: an uplink changed state (u is its status after the
// change, oldState its previous state number). ipv4 and ipv6 are the families' own status
// (state, address, gateway, last probe: FamilyStatus) where the uplink has them.
func interfaceNotice(u UplinkStatus, oldState int) Notice {
	n := Notice{Name: NoticeInterface, Data: map[string]any{
		"network": u.Network, "device": u.Device, "type": u.Type,
		"state": u.State, "state_num": u.StateNum, "old_state_num": oldState,
		"address": u.Address, "gateway": u.Gateway, "in_use": u.InUse,
	}}
	for name, f := range map[string]*FamilyStatus{"ipv4": u.IPv4, "ipv6": u.IPv6} {
		if f == nil {
			continue
		}
		// FamilyStatus has only strings, numbers and booleans: Marshal cannot fail on it.
		if t, err := ubus.Marshal(*f); err == nil {
			n.Data[name] = t
		}
	}
	return n
}

// wifiNotice is connmgr.wifi: the Wi-Fi station uplink's state, for the Wi-Fi daemon.
// wifi_state is attribute 65024's value (0 down, 1 up not confirmed, 2 up and confirmed).
func wifiNotice(u UplinkStatus) Notice {
	return Notice{Name: NoticeWiFi, Data: map[string]any{
		"network": u.Network, "device": u.Device, "state": u.State, "state_num": u.StateNum,
		"wifi_state": interfaceState(u.StateNum), "in_use": u.InUse,
	}}
}

// notice sends n as a ubus event and notifies the object's subscribers. It runs on the loop,
// so the sending happens on the out queue, in order; without a connection the notice is
// dropped (nobody could have heard it).
func (b *bus) notice(n Notice) {
	if b.out == nil {
		return // not started
	}
	t := noticeTable(n.Data)
	b.outMu.Lock()
	full := b.outN >= maxPendingOut
	if !full {
		b.outN++
	}
	b.outMu.Unlock()
	if full {
		b.d.log.Warn("ubus too slow: event dropped", "event", n.Name)
		return
	}
	b.out.Push(func() {
		defer func() {
			b.outMu.Lock()
			b.outN--
			b.outMu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(b.ctx, sendTimeout)
		defer cancel()
		if err := b.client.Send(ctx, n.Name, t); err != nil {
			if errors.Is(err, ubus.StatusConnectionFailed) || errors.Is(err, ubus.ErrClosed) {
				// Nobody is on the bus to hear it.
				b.d.log.Debug("ubus event not sent", "event", n.Name, "err", err)
			} else {
				b.d.log.Warn("ubus event not sent", "event", n.Name, "err", err)
			}
			return
		}
		if err := b.client.Notify(b.obj, n.Name, t); err != nil {
			b.d.log.Debug("ubus notification not sent", "event", n.Name, "err", err)
		}
	})
}

// preferenceChanged announces a new preferred network type (set_attribute 65008, switch) as
// connmgr.network with reason "preference": old and new are the in-use uplink, unchanged
// until the selector acts (it announces its own change), and preferred_network_type says
// what was asked for.
func (b *bus) preferenceChanged(v int) {
	st := b.d.Status()
	n := networkNotice(st.InUse, st.InUse, st.NetworkType, st.NetworkType, "preference")
	n.Data["preferred_network_type"] = v
	n.Data["old_preferred_network_type"] = b.preferred
	b.preferred = v
	b.d.announce(n)
}

// noticeTable turns a notice's data into a blobmsg table, members sorted by name so events
// read the same every time.
func noticeTable(data map[string]any) ubus.Table {
	names := make([]string, 0, len(data))
	for k := range data {
		names = append(names, k)
	}
	sort.Strings(names)
	t := make(ubus.Table, 0, len(names))
	for _, k := range names {
		t = append(t, ubus.Field{Name: k, Value: data[k]})
	}
	return t
}
