package dev.ponder.demo;

import android.app.Activity;
import android.content.Context;
import android.content.SharedPreferences;
import android.os.Bundle;
import android.util.Log;
import android.widget.Button;
import android.widget.EditText;
import android.widget.TextView;
import java.io.File;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * The demo's one screen: the bundle in the app's files dir (files/bundle), a ponder serve URL
 * and a latency budget (kept in the app's preferences), buttons to send 1 or 20 requests, and
 * one line per request, newest first. Model work runs on one background thread.
 */
public class MainActivity extends Activity {
  private static final String TAG = "ponder-demo";
  static final String BUNDLE_DIR = "bundle";
  private static final String PREFS = "ponder-demo";

  private final ExecutorService worker = Executors.newSingleThreadExecutor();
  private final StringBuilder log = new StringBuilder();
  private DemoSession session;
  private Device device;
  private TextView status;
  private TextView lines;
  private EditText serverUrl;
  private EditText latencyMs;

  @Override
  protected void onCreate(Bundle savedInstanceState) {
    super.onCreate(savedInstanceState);
    setContentView(R.layout.activity_main);
    status = findViewById(R.id.status);
    lines = findViewById(R.id.log);
    serverUrl = findViewById(R.id.server_url);
    latencyMs = findViewById(R.id.latency_ms);
    Button load = findViewById(R.id.load);
    Button runOne = findViewById(R.id.run_one);
    Button runMany = findViewById(R.id.run_many);
    device = new Device(this);
    SharedPreferences prefs = getSharedPreferences(PREFS, Context.MODE_PRIVATE);
    serverUrl.setText(prefs.getString("server_url", ""));
    latencyMs.setText(prefs.getString("latency_ms", ""));
    load.setOnClickListener(v -> load());
    runOne.setOnClickListener(v -> requests(1));
    runMany.setOnClickListener(v -> requests(20));
    load();
  }

  private File bundleDir() {
    return new File(getFilesDir(), BUNDLE_DIR);
  }

  private void load() {
    String url = serverUrl.getText().toString();
    String budget = latencyMs.getText().toString().trim();
    getSharedPreferences(PREFS, Context.MODE_PRIVATE).edit()
        .putString("server_url", url).putString("latency_ms", budget).apply();
    status.setText("loading " + bundleDir() + " …");
    worker.execute(() -> {
      try {
        if (session != null) {
          session.close();
          session = null;
        }
        Double latency = budget.isEmpty() ? null : Double.valueOf(budget);
        DemoSession s = new DemoSession(bundleDir().toPath(), latency);
        String offload = "offload off";
        if (!url.isBlank()) {
          try {
            s.offloadTo(url, null);
            offload = "offload to " + url.trim();
          } catch (Exception e) {
            offload = "offload off: " + e.getMessage();
          }
        }
        session = s;
        show(s.describe() + "\n" + offload, null);
      } catch (Exception e) {
        Log.w(TAG, "cannot load the bundle", e);
        show("cannot load " + bundleDir() + ": " + e.getMessage()
            + "\n(see android_demo/README.md: adb push the bundle, then run-as cp)", null);
      }
    });
  }

  private void requests(int n) {
    worker.execute(() -> {
      DemoSession s = session;
      if (s == null) {
        show(null, "no bundle loaded");
        return;
      }
      for (int k = 0; k < n; k++) {
        try {
          String line = s.request(device.read()).line();
          Log.i(TAG, line);
          show(null, line);
        } catch (Exception e) {
          Log.w(TAG, "request failed", e);
          show(null, "request failed: " + e);
          return;
        }
      }
    });
  }

  /** From the worker: a new status and/or one more log line, newest first. */
  private void show(String newStatus, String line) {
    runOnUiThread(() -> {
      if (newStatus != null) {
        status.setText(newStatus);
      }
      if (line != null) {
        log.insert(0, line + "\n");
        lines.setText(log);
      }
    });
  }

  @Override
  protected void onDestroy() {
    worker.execute(() -> {
      if (session != null) {
        session.close();
      }
    });
    worker.shutdown();
    super.onDestroy();
  }
}
