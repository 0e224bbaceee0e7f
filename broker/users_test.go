package broker

import "testing"

// TestPasswordHashRabbitMQCompatible: a hash RabbitMQ 3.10 exported for guest/guest verifies,
// and our own hashes verify only their password.
func TestPasswordHashRabbitMQCompatible(t *testing.T) {
	const fromRabbit = "wgP4Mto8Ndq0atE9BwKioVaQQZlNPQUv506z54d2/+Le71C3" // GET /api/users on Debian's 3.10.8
	if !CheckPassword(fromRabbit, "guest") || CheckPassword(fromRabbit, "guest2") {
		t.Fatal("RabbitMQ's sha256 hash of guest does not verify as such")
	}
	h := HashPassword("s3cret")
	if !ValidPasswordHash(h) || !CheckPassword(h, "s3cret") || CheckPassword(h, "s3cre") || CheckPassword("", "") {
		t.Fatalf("own hash %q misbehaves", h)
	}
	if HashPassword("x") == HashPassword("x") {
		t.Fatal("hashes are not salted")
	}
}
