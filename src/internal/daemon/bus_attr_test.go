package daemon

import (
	"errors"
	"testing"

	"github.com/afero/af-conn/internal/ubus"
)

func TestInterfaceStateAttributes(t *testing.T) {
	up := func(typ string, state int) UplinkStatus { return UplinkStatus{Type: typ, StateNum: state} }
	for _, tc := range []struct {
		name    string
		uplinks []UplinkStatus
		// want: 65024 Wi-Fi, 65037 WAN, 65059 Ethernet, 65022 capabilities
		wifi, wan, eth, caps int64
	}{
		{"no uplinks", nil, 0, 0, 0, 0},
		{"all init (ITFDOWN_SU): nothing known", []UplinkStatus{up("ethernet", 0), up("wifi", 0), up("cellular", 0)}, 0, 0, 0, 0},
		{"devices exist, down", []UplinkStatus{up("ethernet", 1), up("wifi", 1), up("cellular", 1)}, 0, 0, 0, 7},
		{"not supported adds no capability", []UplinkStatus{up("ethernet", 2), up("wifi", 1), up("cellular", 2)}, 0, 0, 0, 1},
		{"up unknown / proven / failing", []UplinkStatus{up("ethernet", 4), up("wifi", 3), up("cellular", 5)}, 1, 1, 2, 7},
		{"only cellular proven", []UplinkStatus{up("cellular", 4)}, 0, 2, 0, 2},
		{"two Ethernet uplinks: the best counts", []UplinkStatus{up("ethernet", 5), up("ethernet", 4)}, 0, 0, 2, 4},
		{"unknown state number is down", []UplinkStatus{up("ethernet", 9)}, 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &Status{Uplinks: tc.uplinks}
			for _, c := range []struct {
				id   int64
				want int64
			}{{AttrWiFiState, tc.wifi}, {AttrWANState, tc.wan}, {AttrEthernetState, tc.eth}, {AttrCapabilities, tc.caps}} {
				a, err := findAttribute(c.id)
				if err != nil {
					t.Fatal(err)
				}
				if got := a.get(st); got != c.want {
					t.Errorf("attribute %d (%s) = %d, want %d", c.id, a.name, got, c.want)
				}
			}
		})
	}
}

// Setting attributes: only 65008 is writable, only -1..2, and a refused set changes nothing.
func TestSetAttribute(t *testing.T) {
	d, _, _, _ := newTestDaemon(t, t.TempDir())
	for _, tc := range []struct {
		id, value int64
		status    ubus.Status
		preferred int
	}{
		{AttrNetworkType, 1, ubus.StatusOK, 1},
		{AttrNetworkType, 3, ubus.StatusInvalidArgument, 1},
		{AttrNetworkType, -2, ubus.StatusInvalidArgument, 1},
		{AttrNetworkType, 1 << 40, ubus.StatusInvalidArgument, 1},
		{AttrNetworkType, 2, ubus.StatusOK, 2},
		{AttrWiFiState, 0, ubus.StatusPermissionDenied, 2},
		{AttrWANState, 1, ubus.StatusPermissionDenied, 2},
		{AttrEthernetState, 2, ubus.StatusPermissionDenied, 2},
		{AttrCapabilities, 7, ubus.StatusPermissionDenied, 2},
		{65000, 0, ubus.StatusInvalidArgument, 2},
		{AttrNetworkType, -1, ubus.StatusOK, -1},
	} {
		a, err := findAttribute(tc.id)
		if err == nil {
			err = a.set(d, tc.value)
		}
		if got := ubus.StatusOf(err); got != tc.status {
			t.Errorf("set %d = %d: status %v (%v), want %v", tc.id, tc.value, got, err, tc.status)
		}
		var se *statusError
		if err != nil && !errors.As(err, &se) {
			t.Errorf("set %d = %d: error %v carries no message of its own", tc.id, tc.value, err)
		}
		if got := d.PreferredNetworkType(); got != tc.preferred {
			t.Errorf("after set %d = %d: preferred %d, want %d", tc.id, tc.value, got, tc.preferred)
		}
	}
}
