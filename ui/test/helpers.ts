// Shared test helpers.

/** The reason `promise` rejects with; fails the test when it resolves instead. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    const value = await promise;
    throw new Error(`expected a rejection, got ${JSON.stringify(value)}`, { cause: "resolved" });
  } catch (error) {
    if (error instanceof Error && error.cause === "resolved") throw error;
    return error;
  }
}
