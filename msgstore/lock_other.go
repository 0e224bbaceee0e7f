//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package msgstore

import (
	"fmt"
	"os"
)

// lockDir only creates the lock file where flock is unavailable: exclusion is then the
// operator's job.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return f, nil
}
