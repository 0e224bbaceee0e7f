// Package wire owns the AMQP 0-9-1 wire format: frames, method arguments,
// content headers, basic properties and field tables, with RabbitMQ's
// extensions and its reading of the field-table type tags.
//
// It is a pure codec. It knows nothing of brokers or sockets: it reads frames
// from an io.Reader and appends encoded frames to caller-owned byte slices, so
// the server decides buffering and flushing. The server's hot path (reading
// publishes, writing deliveries) runs without allocations per frame.
//
// The method structs in methods_gen.go are generated from the spec XML that
// ships inside the amqp091-go module; regenerate them with go generate.
package wire

//go:generate go run ./internal/gen
