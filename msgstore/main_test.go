package msgstore

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		// Re-executed as the crash-test writer: run only that, without leak checks (it is
		// killed, never finishes).
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}
