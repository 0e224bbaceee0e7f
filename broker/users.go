package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"
)

// HashPassword returns a salted SHA-256 hash ("sha256:<salt>:<digest>", the scheme RabbitMQ
// uses by default) to store in the FSM, so no node keeps a password in clear.
func HashPassword(password string) string {
	var salt [8]byte
	_, _ = rand.Read(salt[:])
	sum := sha256.Sum256(append(salt[:], password...))
	return "sha256:" + hex.EncodeToString(salt[:]) + ":" + hex.EncodeToString(sum[:])
}

// CheckPassword reports whether password matches a hash made by HashPassword.
func CheckPassword(hash, password string) bool {
	parts := strings.Split(hash, ":")
	if len(parts) != 3 || parts[0] != "sha256" {
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
