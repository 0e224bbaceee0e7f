package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/warrenmq/warren/rpc"
)

// The examples that talk to a broker have no Output comment: they compile
// and document, and run only where a broker is listening.

func ExampleNewTransport() {
	// oslo's URL form: several hosts, tried in turn with backoff.
	transport, err := rpc.NewTransport("amqp://guest:guest@rabbit1:5672,guest:guest@rabbit2:5672/", rpc.TransportOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer transport.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := transport.Connect(ctx); err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_Call() {
	transport, err := rpc.NewTransport("amqp://guest:guest@127.0.0.1:5672/", rpc.TransportOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer transport.Close()

	client := rpc.NewClient(transport, rpc.Target{Topic: "compute", Version: "1.0"})
	client.Timeout = 30 * time.Second
	ctx := rpc.WithContextValues(context.Background(), map[string]any{"request_id": "req-1"})

	result, err := client.Call(ctx, "get_instance", map[string]any{"id": 42})
	var remote *rpc.RemoteError
	switch {
	case errors.As(err, &remote):
		fmt.Println("remote failure:", remote.Class, remote.Message)
	case errors.Is(err, rpc.ErrTimeout):
		fmt.Println("no reply in time")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println(result)
	}
}

func ExampleClient_Cast() {
	transport, err := rpc.NewTransport("amqp://guest:guest@127.0.0.1:5672/", rpc.TransportOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer transport.Close()
	ctx := context.Background()

	// To one server of the topic (load-balanced):
	if err := rpc.NewClient(transport, rpc.Target{Topic: "compute"}).Cast(ctx, "reboot", map[string]any{"id": 42}); err != nil {
		log.Fatal(err)
	}
	// To every server of the topic:
	fanout := rpc.NewClient(transport, rpc.Target{Topic: "compute", Fanout: true})
	if err := fanout.Cast(ctx, "refresh_cache", nil); err != nil {
		log.Fatal(err)
	}
}

// Compute is an endpoint: its exported methods of the right shape are
// served in snake_case ("GetInstance" answers "get_instance").
type Compute struct{}

type GetInstanceArgs struct {
	ID int `json:"id"`
}

func (Compute) GetInstance(ctx context.Context, args GetInstanceArgs) (map[string]any, error) {
	if args.ID <= 0 {
		return nil, &rpc.RemoteError{Class: "ValueError", Module: "builtins", Message: "bad id"}
	}
	return map[string]any{"id": args.ID, "caller": rpc.ContextValues(ctx)["user"]}, nil
}

func ExampleServer() {
	transport, err := rpc.NewTransport("amqp://guest:guest@127.0.0.1:5672/", rpc.TransportOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer transport.Close()

	compute, err := rpc.NewEndpoint("", "1.3", Compute{})
	if err != nil {
		log.Fatal(err)
	}
	// A handler function can serve a method too.
	compute.Methods["ping"] = func(ctx context.Context, args json.RawMessage) (any, error) { return "pong", nil }

	server, err := rpc.NewServer(transport, rpc.Target{Topic: "compute", Server: "host1"}, []*rpc.Endpoint{compute}, rpc.ServerOptions{Workers: 32})
	if err != nil {
		log.Fatal(err)
	}
	if err := server.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer server.Stop()
	// ... serve until shutdown.
}

func ExampleNotifier() {
	transport, err := rpc.NewTransport("amqp://guest:guest@127.0.0.1:5672/", rpc.TransportOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer transport.Close()
	notifier := rpc.NewNotifier(transport, "compute.host1") // topic "notifications"
	if err := notifier.Info(context.Background(), "instance.create.end", map[string]any{"id": 42}); err != nil {
		log.Fatal(err)
	}
}

func ExampleNotificationListener() {
	transport, err := rpc.NewTransport("amqp://guest:guest@127.0.0.1:5672/", rpc.TransportOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer transport.Close()
	handler := func(ctx context.Context, n *rpc.Notification) error {
		fmt.Println(n.Priority, n.EventType, string(n.Payload))
		return nil
	}
	listener, err := rpc.NewNotificationListener(transport, []rpc.Target{{Topic: "notifications"}}, handler,
		rpc.ListenerOptions{Pool: "billing", AllowRequeue: true})
	if err != nil {
		log.Fatal(err)
	}
	if err := listener.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer listener.Stop()
}

func ExampleParsePriority() {
	p, err := rpc.ParsePriority("WARN")
	fmt.Println(p, err)
	_, err = rpc.ParsePriority("loud")
	fmt.Println(err)
	// Output:
	// warn <nil>
	// unknown notification priority "loud"
}
