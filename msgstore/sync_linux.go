//go:build linux

package msgstore

import (
	"os"
	"syscall"
)

// fdatasync flushes the file's data and the metadata needed to read it back (its size),
// skipping timestamps: cheaper than fsync for an append-only log.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// preallocateFile allocates size bytes (reading as zeros) and sets the file size to at
// least size.
func preallocateFile(f *os.File, size int64) error {
	for {
		err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
		if err != syscall.EINTR {
			return err
		}
	}
}
