package mgmt_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	amqp "github.com/rabbitmq/amqp091-go"
)

const chromium = "/usr/bin/chromium"

// browser starts Debian's headless chromium for one test.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("needs Debian's chromium package (%s): %v", chromium, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // as root in CI containers
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return ctx
}

// TestConsoleInBrowser loads the console of a 3-node cluster in headless chromium: the login
// form logs in, the three nodes (one leader) and a queue declared on another node appear, and a
// queue declared and then deleted through the page comes and goes on every node. A page opened
// with credentials in its URL (http://user:pass@host/) is logged in without the form.
func TestConsoleInBrowser(t *testing.T) {
	nodes := startCluster(t, 3)
	c, err := amqp.Dial("amqp://guest:guest@" + nodes[2].AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, _ := c.Channel()
	if _, err := ch.QueueDeclare("from-amqp", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx := browser(t)
	base := "http://" + nodes[1].HTTP.Addr() + "/"
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	err = chromedp.Do(ctx,
		chromedp.Navigate(base),
		chromedp.WaitVisible(css("#login-form")),
		chromedp.SendKeys(css("#login-user"), "guest"),
		chromedp.SendKeys(css("#login-password"), "guest"),
		chromedp.Click(css("#login-submit")),
		chromedp.WaitVisible(css("#app")),
		chromedp.WaitVisible(css(`#nodes tr[data-node="w3"]`)),
		chromedp.WaitVisible(css(`#queues tr[data-queue="from-amqp"]`)),
	)
	if err != nil {
		t.Fatalf("console: %v", err)
	}
	// One leader marked (polled: a loaded machine may be between elections at any one refresh).
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelectorAll("#nodes tbody tr.leader").length === 1`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("no leader shown: %v", err)
	}
	nodeRows, err1 := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#nodes tbody tr").length`))
	leaderRows, err2 := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#nodes tbody tr.leader").length`))
	queueNames, err3 := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#queues tbody tr")].map(r => r.dataset.queue).join(",")`))
	terms, err4 := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#nodes tbody tr")].map(r => r.children[3].textContent).join(",")`))
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if nodeRows != 3 || leaderRows != 1 || queueNames != "from-amqp" || strings.Count(terms, ",") != 2 || strings.Contains(terms, ",,") {
		t.Fatalf("console shows %d nodes (%d leaders, raft terms %q), queues %q", nodeRows, leaderRows, terms, queueNames)
	}

	// Declare through the page: on every node right away.
	err = chromedp.Do(ctx,
		chromedp.SendKeys(css("#declare-name"), "from-console"),
		chromedp.Click(css("#declare-submit")),
		chromedp.WaitVisible(css(`#queues tr[data-queue="from-console"]`)),
	)
	if err != nil {
		t.Fatalf("declare through the console: %v", err)
	}
	if result, err := chromedp.Run(ctx, chromedp.Text(css("#declare-result"))); err != nil || result != "queue from-console declared" {
		t.Fatalf("declare result %q %v", result, err)
	}
	for _, n := range nodes {
		if q, ok := n.FSM.Queue("/", "from-console"); !ok || !q.Durable || q.Owner != "w2" {
			t.Fatalf("queue declared through the console: %+v %v", q, ok)
		}
	}
	err = chromedp.Do(ctx,
		chromedp.Click(css(`#queues tr[data-queue="from-console"] button.delete-queue`)),
		chromedp.WaitNotPresent(css(`#queues tr[data-queue="from-console"]`)),
	)
	if err != nil {
		t.Fatalf("delete through the console: %v", err)
	}
	for _, n := range nodes {
		if _, ok := n.FSM.Queue("/", "from-console"); ok {
			t.Fatal("queue deleted through the console still exists")
		}
	}
	// The rate chart has been drawn (pixels on the canvas).
	drawn, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const c = document.getElementById("rates-chart");
		const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data; for (let i = 3; i < d.length; i += 4) if (d[i]) return true; return false; })()`))
	if err != nil || !drawn {
		t.Fatalf("rate chart not drawn: %v", err)
	}

	// Credentials in the URL, in a fresh browser: no login form.
	ctx2 := browser(t)
	err = chromedp.Do(ctx2,
		chromedp.Navigate(strings.Replace(base, "http://", "http://guest:guest@", 1)),
		chromedp.WaitVisible(css(`#nodes tr[data-node="w1"]`)),
	)
	if err != nil {
		t.Fatalf("console with credentials in the URL: %v", err)
	}
	if who, err := chromedp.Run(ctx2, chromedp.Text(css("#who"))); err != nil || !strings.HasPrefix(who, "guest (administrator)") {
		t.Fatalf("logged in as %q %v", who, err)
	}
	// A wrong password in the form is refused with the API's reason.
	ctx3 := browser(t)
	err = chromedp.Do(ctx3,
		chromedp.Navigate(base),
		chromedp.WaitVisible(css("#login-form")),
		chromedp.SendKeys(css("#login-user"), "guest"),
		chromedp.SendKeys(css("#login-password"), "wrong"),
		chromedp.Click(css("#login-submit")),
	)
	if err != nil {
		t.Fatal(err)
	}
	loginErr, err := chromedp.Run(ctx3, chromedp.Poll[string](`document.getElementById("login-error").textContent`, chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil || loginErr != "Login failed" {
		t.Fatalf("wrong password: %v %q", err, loginErr)
	}
}
