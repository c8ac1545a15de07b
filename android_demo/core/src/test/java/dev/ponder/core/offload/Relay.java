package dev.ponder.core.offload;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.ArrayList;
import java.util.List;

/**
 * A TCP relay on 127.0.0.1:{@code port} to {@code target}: for the tests, a server that "comes
 * back" on an address that refused connections before. Closing it closes every connection.
 */
final class Relay implements AutoCloseable {
  private final ServerSocket listener;
  private final int target;
  private final List<Socket> sockets = new ArrayList<>();
  private boolean closed;
  private int accepted;

  Relay(int port, int target) throws IOException {
    this.target = target;
    listener = new ServerSocket();
    listener.setReuseAddress(true);
    listener.bind(new java.net.InetSocketAddress(InetAddress.getLoopbackAddress(), port));
    Thread accepting = new Thread(this::accept, "relay-accept");
    accepting.setDaemon(true);
    accepting.start();
  }

  private void accept() {
    while (!listener.isClosed()) {
      try {
        Socket in = listener.accept();
        Socket out = new Socket(InetAddress.getLoopbackAddress(), target);
        synchronized (sockets) {
          accepted++;
          sockets.add(in);
          sockets.add(out);
          if (closed) { // accepted while closing: end it too
            in.close();
            out.close();
            return;
          }
        }
        pump(in, out);
        pump(out, in);
      } catch (IOException e) {
        return; // closed
      }
    }
  }

  private static void pump(Socket from, Socket to) {
    Thread t = new Thread(() -> {
      byte[] chunk = new byte[16384];
      try (InputStream in = from.getInputStream()) {
        OutputStream out = to.getOutputStream();
        int n;
        while ((n = in.read(chunk)) > 0) {
          out.write(chunk, 0, n);
          out.flush();
        }
        to.shutdownOutput();
      } catch (IOException e) {
        // a side closed: the connection ends
      }
    }, "relay-pump");
    t.setDaemon(true);
    t.start();
  }

  /** Connections accepted so far. */
  int accepted() {
    synchronized (sockets) {
      return accepted;
    }
  }

  @Override
  public void close() throws IOException {
    synchronized (sockets) {
      closed = true;
      listener.close();
      for (Socket s : sockets) {
        s.close();
      }
    }
  }
}
