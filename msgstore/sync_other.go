//go:build !linux

package msgstore

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

func preallocateFile(*os.File, int64) error { return nil }
