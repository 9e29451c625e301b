package engage.bench.kstreams;
public final class EngageStreams { public static void main(String[] a) { System.out.println("hi"); } }
