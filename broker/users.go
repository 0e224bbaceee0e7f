package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// HashingAlgorithm is the name RabbitMQ gives the scheme HashPassword uses; definitions files
// carry it next to each password_hash.
const HashingAlgorithm = "rabbit_password_hashing_sha256"

// HashPassword returns base64(salt ++ sha256(salt ++ password)) with a random 4-byte salt:
// RabbitMQ's rabbit_password_hashing_sha256, so hashes move between Warren and RabbitMQ in
// definitions files and no node keeps a password in clear.
func HashPassword(password string) string {
	var salt [4]byte
	_, _ = rand.Read(salt[:])
	sum := sha256.Sum256(append(salt[:], password...))
	return base64.StdEncoding.EncodeToString(append(salt[:], sum[:]...))
}

// CheckPassword reports whether password matches hash: RabbitMQ's format (HashPassword), or
// the "sha256:<hex salt>:<hex digest>" form earlier Warren versions stored. An empty hash
// (a user without a password, as RabbitMQ allows) matches nothing.
func CheckPassword(hash, password string) bool {
	if strings.HasPrefix(hash, "sha256:") {
		return checkLegacy(hash, password)
	}
	raw, err := base64.StdEncoding.DecodeString(hash)
	if err != nil || len(raw) != 4+sha256.Size {
		return false
	}
	sum := sha256.Sum256(append(raw[:4:4], password...))
	return subtle.ConstantTimeCompare(sum[:], raw[4:]) == 1
}

// ValidPasswordHash reports whether hash is one CheckPassword can verify (or empty).
func ValidPasswordHash(hash string) bool {
	if hash == "" {
		return true
	}
	raw, err := base64.StdEncoding.DecodeString(hash)
	return err == nil && len(raw) == 4+sha256.Size
}

func checkLegacy(hash, password string) bool {
	parts := strings.Split(hash, ":")
	if len(parts) != 3 {
		return false
	}
	salt, err := hex.DecodeString(parts[1])
	if err != nil {
		return false
	}
	want, err := hex.DecodeString(parts[2])
	if err != nil {
		return false
	}
	sum := sha256.Sum256(append(salt, password...))
	return subtle.ConstantTimeCompare(sum[:], want) == 1
}
