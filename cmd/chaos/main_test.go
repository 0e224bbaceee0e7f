package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Bad input is refused with exit code 2 and a message naming the problem, before any cluster
// is touched.
func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--duration", "0"}, "--duration must be at least 1 second"},
		{[]string{"--duration", "ten"}, "invalid value"},
		{[]string{"--seed", "-3"}, "invalid value"},
		{[]string{"--nodes", "2"}, "--nodes must be at least 3"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"--quorum-kill-availability", "95"}, "must be a share between 0 and 1"},
		{[]string{"--script", "/nonexistent/cluster.sh"}, "cluster script"},
		{[]string{"--docker", "--script", "/nonexistent/docker-cluster.sh"}, "cluster script"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: stderr %q does not say %q", tc.args, errOut.String(), tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("%v: wrote to stdout: %q", tc.args, out.String())
		}
	}
}
