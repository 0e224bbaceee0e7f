package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// secretFile holds the cluster secret a node generated because it was started without one.
const secretFile = "cluster-secret"

// resolveSecret fills in a missing cluster secret. Every node-to-node port authenticates with
// it, so there is no "no secret" mode: a node started without one (a dev node, zero-config)
// generates a random secret, keeps it in its data dir so a restart finds the same one, and
// says so. A node that joins others cannot guess theirs and must be given it.
func resolveSecret(cfg *Config, log *slog.Logger) error {
	if cfg.ClusterSecret != "" {
		return nil
	}
	path := filepath.Join(cfg.DataDir, secretFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil && strings.TrimSpace(string(b)) != "":
		cfg.ClusterSecret = strings.TrimSpace(string(b))
		log.Info("cluster secret read from the data dir (generated at first start)", "file", path)
		return nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(cfg.Join) > 0 {
		return errors.New("joining a cluster (--join) needs the cluster's secret: set --cluster-secret (or WARREN_CLUSTER_SECRET) to the secret of the nodes it joins")
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("generate cluster secret: %w", err)
	}
	secret := hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("store generated cluster secret: %w", err)
	}
	cfg.ClusterSecret = secret
	log.Warn("no cluster secret given: generated a random one; nodes that join this one need it (--cluster-secret)",
		"secret", secret, "file", path)
	return nil
}
