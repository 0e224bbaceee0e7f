package node

import "testing"

func TestAdvertisedAndDialable(t *testing.T) {
	cases := []struct {
		listen, host, want string
		dialable           bool
	}{
		{"127.0.0.1:7401", "", "127.0.0.1:7401", true},
		{"0.0.0.0:7401", "", "0.0.0.0:7401", false},
		{"0.0.0.0:7401", "n1.example", "n1.example:7401", true},
		{"[::]:7401", "10.0.0.5", "10.0.0.5:7401", true},
		{":7401", "", ":7401", false},
		{"10.0.0.9:7401", "10.0.0.5", "10.0.0.9:7401", true},
	}
	for _, c := range cases {
		got := advertised(c.listen, c.host)
		if got != c.want || dialable(got) != c.dialable {
			t.Errorf("advertised(%q, %q) = %q (dialable %v), want %q (dialable %v)", c.listen, c.host, got, dialable(got), c.want, c.dialable)
		}
	}
}
