// The hash router: the current page as a rune, kept in step with location.hash.
import { DEFAULT_PAGE, hashFor, pageFromHash, type PageId } from "./nav";

class Router {
  page = $state<PageId>(DEFAULT_PAGE);

  /** Reads the current hash and follows hashchange; returns the cleanup. */
  init(): () => void {
    const sync = () => {
      this.page = pageFromHash(location.hash);
      // Normalise unknown or empty hashes so the address always names the page shown.
      if (location.hash !== hashFor(this.page)) {
        history.replaceState(history.state, "", hashFor(this.page));
      }
    };
    sync();
    window.addEventListener("hashchange", sync);
    return () => window.removeEventListener("hashchange", sync);
  }

  go(page: PageId): void {
    if (location.hash !== hashFor(page)) location.hash = hashFor(page);
    this.page = page;
  }
}

export const router = new Router();
